"""Stock Apache Airflow 3 on the real node: its scheduler with the KubernetesExecutor runs a two-task DAG whose
tasks hand a file over through /staging; the run ends success, and a GC Job reclaims the volume from Airflow's
own ``dag_run``. The chart is installed with ``config.identity=airflow``; nothing of Airflow is changed.

Airflow's api-server, dag-processor and scheduler run on the host (Airflow's venv from
hack/ensure-airflow.sh); the worker pods run the image ``hack/build-images.sh airflow`` builds from the same
pins. Workers talk only HTTP to the execution API on the node's address, never to the database.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.cluster import NodeCluster
from devenv.images import build_images
from devenv.node import primary_ip
from devenv.processes import ManagedProcess, free_port, log_tail
from shared import labels
from shared.naming import pvc_name
from tests.support.airflow import Airflow

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "airflow-leoflow-staging"
NS = "leoflow-airflow"
TENANT = "airflow-tasks"
DAG_ID = "staging_handoff"
RUN_ID = "manual__2026-11-28T12:00:00+00:00"
PAYLOAD = 8 << 20

DAG = '''
import hashlib
import os

from kubernetes.client import models as k8s

from airflow.sdk import dag, task

# The opt-in, per task: a pod_override adding the label (the pod template could carry it for every task).
STAGING = {"pod_override": k8s.V1Pod(metadata=k8s.V1ObjectMeta(labels={"leoflow.io/staging": "enabled"}))}


@dag(dag_id="@DAG_ID@", schedule=None, catchup=False)
def staging_handoff():
    @task(executor_config=STAGING)
    def extract() -> str:
        folder = os.environ["LEOFLOW_STAGING_DIR"]
        data = os.urandom(@PAYLOAD@)
        tmp = os.path.join(folder, f".data.bin.{os.getpid()}.tmp")  # a temporary name per attempt
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, os.path.join(folder, "data.bin"))
        return hashlib.sha256(data).hexdigest()

    @task(executor_config=STAGING)
    def transform(digest: str) -> int:
        with open(os.path.join(os.environ["LEOFLOW_STAGING_DIR"], "data.bin"), "rb") as handed_over:
            data = handed_over.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError("the file on /staging is not what extract wrote")
        return len(data)

    transform(extract())


staging_handoff()
'''.replace("@DAG_ID@", DAG_ID).replace("@PAYLOAD@", str(PAYLOAD))


@dataclass
class AirflowOnHost:
    """Airflow's three host processes (api-server, dag-processor, scheduler) with the KubernetesExecutor."""

    airflow: Airflow
    kubeconfig: Path
    node_ip: str
    worker_image: str
    port: int = 0
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def execution_api(self) -> str:
        return f"http://{self.node_ip}:{self.port}/execution/"

    def pod_template(self) -> dict[str, Any]:
        """What a platform team's pod_template_file holds here: the image never pulled, the DAGs folder at the
        host's path (single node), no service links; workers get a database URL they never open."""
        dags = str(self.airflow.home / "dags")
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "placeholder"}, "spec": {
            "restartPolicy": "Never", "enableServiceLinks": False, "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "base", "image": self.worker_image, "imagePullPolicy": "Never",
                "env": [{"name": "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "value": self.execution_api},
                        {"name": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "value": "sqlite:////tmp/never-opened.db"},
                        {"name": "AIRFLOW__CORE__DAGS_FOLDER", "value": dags},
                        {"name": "AIRFLOW__CORE__LOAD_EXAMPLES", "value": "False"},
                        {"name": "AIRFLOW_HOME", "value": "/tmp/airflow"}],
                "volumeMounts": [{"name": "dags", "mountPath": dags, "readOnly": True}]}],
            "volumes": [{"name": "dags", "hostPath": {"path": dags, "type": "Directory"}}]}}

    def executor_settings(self) -> dict[str, str]:
        repo, tag = self.worker_image.rsplit(":", 1)
        return {
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": self.execution_api,
            "AIRFLOW__API__HOST": self.node_ip,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
            "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": str(self.kubeconfig),
            "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": TENANT,
            "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(self.airflow.home / "pod_template.json"),
            "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_REPOSITORY": repo,
            "AIRFLOW__KUBERNETES_EXECUTOR__WORKER_CONTAINER_TAG": tag,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }

    def start(self) -> None:
        self.port = free_port()
        home = self.airflow.home
        (home / "dags").mkdir(parents=True)
        (home / "dags" / "staging_handoff.py").write_text(DAG, encoding="utf-8")
        (home / "pod_template.json").write_text(json.dumps(self.pod_template()), encoding="utf-8")
        self.airflow.extra_env.update(self.executor_settings())
        self.airflow.cli("db", "migrate")
        program = str(self.airflow.venv / "bin" / "airflow")
        for name in ("api-server", "dag-processor", "scheduler"):
            process = ManagedProcess(f"airflow-{name}", [program, name], home / f"{name}.log",
                                     env=self.airflow.env())
            process.start()
            self.processes.append(process)
        self.processes[0].wait_healthy(
            lambda: urllib.request.urlopen(f"http://{self.node_ip}:{self.port}/api/v2/monitor/health",
                                           timeout=2).status == 200, timeout=120)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{log_tail(p.log_path, 30)}" for p in self.processes)


@pytest.fixture(scope="module")
def worker_image(cluster: NodeCluster) -> str:
    image = build_images(("airflow",))["airflow"]
    assert cluster.node is not None
    cluster.node.import_image(image.archive, image.ref)
    return image.ref


@pytest.fixture(scope="module")
def airflow_db(cluster: NodeCluster) -> str:
    assert cluster.postgres is not None
    cluster.postgres.create_database("airflow_node")
    return "airflow_node"


@pytest.fixture(scope="module")
def airflow_host(cluster: NodeCluster, airflow_venv: Path, airflow_db: str, worker_image: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowOnHost]:
    assert cluster.postgres is not None and cluster.plane is not None
    installation = Airflow(venv=airflow_venv, home=tmp_path_factory.mktemp("airflow_node_home"),
                           database_url=cluster.postgres.url(airflow_db))
    host = AirflowOnHost(airflow=installation, kubeconfig=cluster.plane.kubeconfig_path, node_ip=primary_ip(),
                         worker_image=worker_image)
    try:
        host.start()
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def release(cluster: NodeCluster, core: client.CoreV1Api, airflow_host: AirflowOnHost,
            airflow_db: str) -> Iterator[str]:
    """The chart in airflow identity mode on Airflow's metadatabase (its migrate Job adds our tables)."""
    core.create_namespace({"metadata": {"name": TENANT, "labels": {labels.INSTANCE: RELEASE}}})  # served by it
    cluster.install_chart(release=RELEASE, namespace=NS, database=airflow_db,
                          values=("--set", "config.identity=airflow", "--set", "gc.suspend=true",
                                  "--set", "config.defaultSize=1Gi", "--set", "gc.settleSeconds=20"))
    yield TENANT
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    core.delete_namespace(NS)
    core.delete_namespace(TENANT)


def _wait_run(engine: sa.Engine, host: AirflowOnHost, *, timeout: float = 300) -> tuple[str, list[Any]]:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            state = conn.execute(sa.text("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r"),
                                 {"d": DAG_ID, "r": RUN_ID}).scalar()
            tis = conn.execute(sa.text("SELECT task_id, state, try_number FROM task_instance WHERE dag_id = :d "
                                       "AND run_id = :r ORDER BY task_id"), {"d": DAG_ID, "r": RUN_ID}).all()
        if state in ("success", "failed"):
            return state, list(tis)
        time.sleep(1)
    raise AssertionError(f"run {RUN_ID} still {state} after {timeout}s\n{host.logs()}")


def test_airflow_kubernetes_executor_hands_a_file_over_through_staging(
        cluster: NodeCluster, core: client.CoreV1Api, release: str, airflow_host: AirflowOnHost,
        airflow_db: str) -> None:
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.url(airflow_db))
    try:
        # The dag-processor parses the DAG; then a person triggers a run with Airflow's CLI.
        deadline = time.monotonic() + 120
        while DAG_ID not in airflow_host.airflow.cli("dags", "list", "-o", "plain"):
            assert time.monotonic() < deadline, f"DAG never parsed\n{airflow_host.logs()}"
            time.sleep(2)
        airflow_host.airflow.cli("dags", "trigger", DAG_ID, "--run-id", RUN_ID)
        # While it runs: the executor's pods carry the run's claim (they are deleted when they succeed).
        claim = pvc_name(DAG_ID, RUN_ID)
        seen: dict[str, list[str]] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(seen) < 2:
            for pod in core.list_namespaced_pod(release, label_selector="kubernetes_executor=True").items:
                task = pod.metadata.annotations.get("task_id")
                claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes or []
                          if v.persistent_volume_claim]
                seen.setdefault(task, claims)
            time.sleep(0.5)
        state, tis = _wait_run(engine, airflow_host)
        assert state == "success", f"{tis}\n{airflow_host.logs()}"
        assert sorted((t.task_id, t.state) for t in tis) == [("extract", "success"), ("transform", "success")]
        assert seen == {"extract": [claim], "transform": [claim]}, seen
        with engine.connect() as conn:
            handed = conn.execute(sa.text("SELECT value FROM xcom WHERE dag_id = :d AND run_id = :r AND "
                                          "task_id = 'transform'"), {"d": DAG_ID, "r": RUN_ID}).scalar()
            row = conn.execute(sa.text("SELECT run_id, state, pvc_name FROM staging_volumes WHERE dag_id = :d"),
                               {"d": DAG_ID}).one()
        assert (json.loads(handed) if isinstance(handed, str) else handed) == PAYLOAD
        assert tuple(row) == (RUN_ID, "active", claim)  # the raw run id, from Airflow's annotation

        # The GC reads Airflow's own dag_run: success -> reclaimed at once.
        lines = cluster.gc_job(NS, "gc-airflow", cronjob=f"{RELEASE}-gc")
        reclaimed = [x for x in lines if x.get("event") == "reclaimed" and x.get("pvc") == claim]
        assert reclaimed and reclaimed[0]["reason"] == "run_succeeded", lines
        assert claim not in {p.metadata.name for p in core.list_namespaced_persistent_volume_claim(release).items}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT state, delete_reason FROM staging_volumes WHERE dag_id = :d"),
                                {"d": DAG_ID}).one() == ("deleted", "run_succeeded")
    finally:
        engine.dispose()
