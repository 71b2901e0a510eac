"""Fixtures for tests against the real control plane: API clients, namespaces, the running webhook."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.controlplane import KCM_RESYNC_BOUND_SECONDS, ControlPlane
from devenv.postgres import Postgres
from shared import labels
from shared.db.migrate import upgrade
from tests.e2e.gc_support import Bench, own_kube
from tests.support.orchestrator import create_runs_table
from tests.support.webhook import WebhookProcess

RWX_CLASS = "leoflow-test-nfs"


@pytest.fixture(scope="session")
def rwx_class(api: client.ApiClient) -> Iterator[str]:
    storage = client.StorageV1Api(api)
    storage.create_storage_class({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": RWX_CLASS}, "provisioner": "nfs.csi.k8s.io",
    })
    yield RWX_CLASS
    storage.delete_storage_class(RWX_CLASS)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace served by the default installation (labelled for it, as an operator does)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {labels.INSTANCE: labels.DEFAULT_INSTANCE}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def webhook_db(postgres: Postgres) -> str:
    """A migrated database shared by the webhook process of this session."""
    url = postgres.create_database("webhook_e2e")
    engine = sa.create_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def webhook(control_plane: ControlPlane, webhook_db: str, api: client.ApiClient, rwx_class: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    server = WebhookProcess(
        workdir=tmp_path_factory.mktemp("webhook"),
        env={
            "LEOFLOW_STAGING_DATABASE_URL": webhook_db,
            "LEOFLOW_STAGING_KUBECONFIG": str(control_plane.kubeconfig_path),
                "LEOFLOW_STAGING_MAX_SIZE": "100Gi",
            "LEOFLOW_STAGING_DEFAULT_SIZE": "5Gi",
            "LEOFLOW_STAGING_WORKERS": "2",
        },
    )
    server.start()
    server.register(api)
    try:
        yield server
    finally:
        client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration("leoflow-staging-test")
        server.stop()


@pytest.fixture
def bench(database_url: str, kubeconfig: Path, namespace: str, rwx_class: str) -> Iterator[Bench]:
    """A GC test bench on a fresh migrated database with the orchestrator's runs table, on an installation
    of its own (``own_kube``), which serves the test's namespace."""
    engine = sa.create_engine(database_url)
    upgrade(engine)
    create_runs_table(engine)
    yield Bench(engine=engine, kube=own_kube(str(kubeconfig), namespace), namespace=namespace)
    engine.dispose()


@pytest.fixture
def db(webhook_db: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(webhook_db)
    yield engine
    engine.dispose()


def rows_for(engine: sa.Engine, namespace: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(sa.text("SELECT * FROM staging_volumes WHERE namespace = :ns ORDER BY id"),
                              {"ns": namespace})
        return [dict(r._mapping) for r in result]


def pod_dict(api: client.ApiClient, pod: Any) -> dict[str, Any]:
    data: dict[str, Any] = api.sanitize_for_serialization(pod)
    return data


def staging_pvc_of(pod: dict[str, Any]) -> str | None:
    value: str | None = pod["metadata"].get("annotations", {}).get(labels.PVC)
    return value


def wait_until_gone(core: client.CoreV1Api, namespace: str, *,
                    timeout: float = KCM_RESYNC_BOUND_SECONDS + 30.0) -> None:
    """Wait until the namespace has no PVC left (kube-controller-manager's pvc-protection removes the finalizer).
    The bound is the controller's own: an event it missed (e.g. around an apiserver restart) is acted on at its
    next resync, plus time for its watches to reconnect and for a loaded machine."""
    deadline = time.monotonic() + timeout
    while core.list_namespaced_persistent_volume_claim(namespace).items:
        if time.monotonic() > deadline:
            raise AssertionError(f"PVCs in {namespace} still present after {timeout}s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def fault_postgres() -> Iterator[Postgres]:
    """The fault tests' own PostgreSQL server (they stop and restart it, so it is not the session's shared one);
    started once, a database per test."""
    pg = Postgres(die_with_parent=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        pg.cleanup()
