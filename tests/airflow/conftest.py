"""Stock Apache Airflow 3 as a client: its own virtualenv (hack/ensure-airflow.sh), its metadatabase migrated by
``airflow db migrate`` on the test PostgreSQL, and a webhook in ``airflow`` identity mode that only sees the
namespaces of these tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from devenv.webhook import TEST_WEBHOOK_LABEL
from shared import labels
from shared.db.migrate import upgrade
from tests.support.airflow import Airflow
from tests.support.webhook import WebhookProcess

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_CLASS = "leoflow-airflow-rwx"
WEBHOOK_NAME = "leoflow-staging-airflow-test"

# The DAGs these tests trigger runs of (parsed by `airflow dags reserialize`, as a dag-processor would).
DAG_FILE = '''
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

for dag_id in {dag_ids!r}:
    with DAG(dag_id, schedule=None) as dag:
        EmptyOperator(task_id="extract") >> EmptyOperator(task_id="transform") >> EmptyOperator(task_id="load")
    globals()[f"dag_{{len(globals())}}"] = dag
'''
UNICODE_DAG = ("données_élaborées_" * 12)[:200]  # 200 characters, label-unsafe: Airflow hashes its label
DAG_IDS = ("staging_etl", "staging_clean", UNICODE_DAG)


@pytest.fixture(scope="package")
def airflow(airflow_venv: Path, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Airflow:
    """Airflow's metadatabase as `airflow db migrate` makes it, with leoflow-staging's schema beside it (the
    documented layout: one database, our own Alembic version table), and the test DAGs serialized."""
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    (home / "dags" / "staging_dags.py").write_text(DAG_FILE.format(dag_ids=DAG_IDS), encoding="utf-8")
    installation = Airflow(venv=airflow_venv, home=home, database_url=postgres.create_database("airflow_meta"))
    installation.cli("db", "migrate")
    engine = sa.create_engine(installation.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    installation.cli("dags", "reserialize")
    return installation


@pytest.fixture(scope="package")
def airflow_class(api: client.ApiClient) -> Iterator[str]:
    """An RWX class for these tests only (API level: nothing provisions it; claims stay Pending)."""
    storage = client.StorageV1Api(api)
    storage.create_storage_class({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": AIRFLOW_CLASS, "annotations": {"leoflow.io/rwx": "true"}},
        "provisioner": "example.com/airflow-test-rwx",
    })
    yield AIRFLOW_CLASS
    storage.delete_storage_class(AIRFLOW_CLASS)


@pytest.fixture(scope="package")
def airflow_webhook(control_plane: ControlPlane, airflow: Airflow, api: client.ApiClient, airflow_class: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """``leoflow-staging serve`` with LEOFLOW_STAGING_IDENTITY=airflow on Airflow's metadatabase."""
    server = WebhookProcess(workdir=tmp_path_factory.mktemp("airflow_webhook"), env={
        "LEOFLOW_STAGING_IDENTITY": "airflow",
        "LEOFLOW_STAGING_DATABASE_URL": airflow.database_url,
        "LEOFLOW_STAGING_KUBECONFIG": str(control_plane.kubeconfig_path),
        "LEOFLOW_STAGING_STORAGE_CLASS": airflow_class,
        "LEOFLOW_STAGING_DEFAULT_SIZE": "2Gi",
        "LEOFLOW_STAGING_WORKERS": "1",
    })
    server.start()
    server.register(api, WEBHOOK_NAME, namespace_label="airflow")
    try:
        yield server
    finally:
        client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(WEBHOOK_NAME)
        server.stop()


@pytest.fixture
def airflow_namespace(core: client.CoreV1Api, airflow_webhook: WebhookProcess) -> Iterator[str]:
    name = f"af-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {  # served by the default installation
        TEST_WEBHOOK_LABEL: "airflow", labels.INSTANCE: labels.DEFAULT_INSTANCE}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def pod_template(tmp_path: Path) -> Path:
    """The executor's pod_template_file, as a platform team would write it (the opt-in comes per task from a
    pod_override here; a template may carry the label for every task instead)."""
    path = tmp_path / "pod_template.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: placeholder\nspec:\n  restartPolicy: Never\n"
        "  containers:\n    - name: base\n      image: placeholder\n"
        "      resources: {requests: {cpu: 100m, memory: 256Mi}}\n"
        "    - name: log-shipper\n      image: busybox\n      args: [sh, -c, 'tail -F /dev/null']\n"
        "  initContainers:\n    - name: wait-for-config\n      image: busybox\n      args: ['true']\n",
        encoding="utf-8")
    return path
