"""Task pods built by stock Airflow 3 code, created through the real apiserver, mutated by the webhook in
``airflow`` identity mode (LEOFLOW_STAGING_IDENTITY=airflow)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from shared.naming import pvc_name
from tests.airflow.conftest import AIRFLOW_CLASS, UNICODE_DAG
from tests.support.airflow import Airflow
from tests.support.webhook import WebhookProcess, console_script

pytestmark = [pytest.mark.e2e, pytest.mark.db]

RUN_A = "manual__2026-11-28T10:00:00.123456+00:00"
RUN_B = "scheduled__2026-11-28T00:00:00+00:00"


def _create(core: client.CoreV1Api, api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.sanitize_for_serialization(core.create_namespaced_pod(namespace, body))
    return created


def _claim_of(pod: dict[str, Any]) -> str:
    """The staging claim a mutated pod mounts, after checking every container mounts it with the env var."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    claim: str = volumes["leoflow-staging"]["persistentVolumeClaim"]["claimName"]
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert mounts.get("leoflow-staging") == "/staging", container["name"]
        assert env.get("LEOFLOW_STAGING_DIR") == "/staging", container["name"]
    return claim


def _rows(airflow: Airflow, namespace: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(airflow.database_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text("SELECT * FROM staging_volumes WHERE namespace = :ns ORDER BY id"),
                                  {"ns": namespace})
            return [dict(r._mapping) for r in result]
    finally:
        engine.dispose()


def test_executor_pods_get_one_claim_per_run_from_the_raw_annotations(
        airflow: Airflow, airflow_webhook: WebhookProcess, api: client.ApiClient,
        core: client.CoreV1Api, airflow_namespace: str, pod_template: Path) -> None:
    tasks = ([{"dag_id": "staging_etl", "run_id": RUN_A, "task_id": t} for t in ("extract", "transform", "load")]
             + [{"dag_id": "staging_etl", "run_id": RUN_B, "task_id": "extract"},
                {"dag_id": UNICODE_DAG, "run_id": RUN_A, "task_id": "extract"}])
    pods = airflow.side("executor-pods", {"template_file": str(pod_template), "namespace": airflow_namespace,
                                          "image": "apache/airflow:3.3.2", "tasks": tasks})
    # What Airflow built: raw ids in annotations, lossy labels (a run id always hashes), our label merged.
    first = pods[0]["metadata"]
    assert first["annotations"]["run_id"] == RUN_A and first["labels"]["run_id"] != RUN_A
    assert first["labels"]["leoflow.io/staging"] == "enabled" and first["labels"]["airflow-worker"] == "1"
    assert pods[4]["metadata"]["labels"]["dag_id"] != UNICODE_DAG

    created = [_create(core, api, airflow_namespace, body) for body in pods]
    claims = [_claim_of(pod) for pod in created]
    assert claims[0] == claims[1] == claims[2] == pvc_name("staging_etl", RUN_A)
    assert claims[3] == pvc_name("staging_etl", RUN_B)
    assert claims[4] == pvc_name(UNICODE_DAG, RUN_A)
    assert len(set(claims)) == 3
    for pod in created:  # the containers of the pod template (init container and sidecar) got it too
        assert [c["name"] for c in pod["spec"]["containers"]] == ["base", "log-shipper"]
        assert pod["metadata"]["annotations"]["leoflow.io/staging-pvc"] in claims

    live = [str(c.metadata.name) for c in core.list_namespaced_persistent_volume_claim(airflow_namespace).items]
    assert sorted(live) == sorted(set(claims))
    pvc = core.read_namespaced_persistent_volume_claim(claims[4], airflow_namespace)
    assert pvc.spec.access_modes == ["ReadWriteMany"] and pvc.spec.storage_class_name == AIRFLOW_CLASS
    assert pvc.metadata.annotations["leoflow.io/dag-id"] == UNICODE_DAG  # raw, 200 characters, intact

    rows = _rows(airflow, airflow_namespace)
    assert sorted((r["dag_id"], r["run_id"], r["pvc_name"], r["state"]) for r in rows) == sorted([
        ("staging_etl", RUN_A, claims[0], "active"), ("staging_etl", RUN_B, claims[3], "active"),
        (UNICODE_DAG, RUN_A, claims[4], "active")])


def test_a_retry_and_a_task_without_the_opt_in(
        airflow: Airflow, airflow_webhook: WebhookProcess, api: client.ApiClient,
        core: client.CoreV1Api, airflow_namespace: str, pod_template: Path) -> None:
    tasks = [{"dag_id": "staging_etl", "run_id": RUN_A, "task_id": "extract", "try_number": 1},
             {"dag_id": "staging_etl", "run_id": RUN_A, "task_id": "extract", "try_number": 2},
             {"dag_id": "staging_etl", "run_id": RUN_A, "task_id": "report", "opt_in": False}]
    pods = airflow.side("executor-pods", {"template_file": str(pod_template), "namespace": airflow_namespace,
                                          "image": "apache/airflow:3.3.2", "tasks": tasks})
    first, retry, plain = (_create(core, api, airflow_namespace, body) for body in pods)
    assert _claim_of(first) == _claim_of(retry) == pvc_name("staging_etl", RUN_A)
    assert "leoflow-staging" not in {v["name"] for v in plain["spec"].get("volumes", [])}
    assert len(_rows(airflow, airflow_namespace)) == 1


def test_kubernetes_pod_operator_needs_templated_annotations(
        airflow: Airflow, airflow_webhook: WebhookProcess, api: client.ApiClient,
        core: client.CoreV1Api, airflow_namespace: str, kubeconfig: Path) -> None:
    spec = {"kubeconfig": str(kubeconfig), "namespace": airflow_namespace, "image": "busybox",
            "dag_id": "staging_etl", "task_id": "crunch", "run_id": RUN_B}
    bare = airflow.side("operator-pod", {**spec, "templated": False})
    assert bare["metadata"].get("annotations") in (None, {})
    assert bare["metadata"]["labels"]["kubernetes_pod_operator"] == "True"
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_pod(airflow_namespace, bare)
    assert info.value.status == 422
    message = json.loads(info.value.body)["message"]
    assert "no dag_id annotation" in message and "annotations dag_id and run_id" in message
    assert '"run_id": "{{ run_id }}"' in message and '"dag_id": "{{ dag.dag_id }}"' in message
    assert not _rows(airflow, airflow_namespace)
    assert not core.list_namespaced_persistent_volume_claim(airflow_namespace).items

    templated = airflow.side("operator-pod", {**spec, "templated": True})
    assert templated["metadata"]["annotations"] == {"dag_id": "staging_etl", "run_id": RUN_B}
    created = _create(core, api, airflow_namespace, templated)
    assert _claim_of(created) == pvc_name("staging_etl", RUN_B)
    assert [(r["dag_id"], r["run_id"]) for r in _rows(airflow, airflow_namespace)] == [("staging_etl", RUN_B)]


def test_helm_test_check_passes_in_airflow_mode(airflow_webhook: WebhookProcess, core: client.CoreV1Api,
                                                airflow_namespace: str, kubeconfig: Path) -> None:
    """`helm test` runs `leoflow-staging check-admission`: its dry-run pod must pass in either identity mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    done = subprocess.run([console_script(), "--kubeconfig", str(kubeconfig), "check-admission", "--namespace",
                           airflow_namespace], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"ok": true' in done.stdout
    assert core.list_namespaced_persistent_volume_claim(airflow_namespace).items == []  # dry run
