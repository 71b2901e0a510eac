"""The real parts the benchmarks measure: control plane, PostgreSQL, migrated database, webhook."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from kubernetes import client, config

from devenv.assets import ensure_assets
from devenv.controlplane import ControlPlane
from devenv.orchestrator import create_runs_table
from devenv.postgres import Postgres
from devenv.webhook import WebhookProcess
from shared import labels
from shared.db.migrate import upgrade

NAMESPACE = "bench"
RWX_CLASS = "bench-nfs"


@dataclass
class BenchEnv:
    plane: ControlPlane
    pg: Postgres
    db_url: str
    webhook: WebhookProcess
    api: client.ApiClient
    workdir: Path

    @property
    def ca_file(self) -> str:
        return str(self.webhook.ca_file)


def create_database(pg: Postgres, name: str) -> str:
    """A migrated database with the orchestrator's runs table; returns its URL."""
    admin = sa.create_engine(pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = pg.url(name)
    engine = sa.create_engine(url)
    upgrade(engine)
    create_runs_table(engine)
    engine.dispose()
    return url


@contextlib.contextmanager
def bench_env(*, workers: int = 2, threads: int = 8) -> Iterator[BenchEnv]:
    workdir = Path(tempfile.mkdtemp(prefix="leoflow-bench-"))
    plane = ControlPlane(assets=ensure_assets(), workdir=workdir / "controlplane")
    pg = Postgres()
    webhook: WebhookProcess | None = None
    try:
        plane.start()
        pg.start()
        db_url = create_database(pg, "bench")
        api = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE, "labels": {
            labels.INSTANCE: labels.DEFAULT_INSTANCE}}})
        client.StorageV1Api(api).create_storage_class({"metadata": {"name": RWX_CLASS},
                                                       "provisioner": "nfs.csi.k8s.io"})
        webhook = WebhookProcess(workdir=workdir / "webhook", env={
            "LEOFLOW_STAGING_DATABASE_URL": db_url,
            "LEOFLOW_STAGING_KUBECONFIG": str(plane.kubeconfig_path),
            "LEOFLOW_STAGING_WORKERS": str(workers),
            "LEOFLOW_STAGING_THREADS": str(threads),
        })
        webhook.start()
        webhook.register(api, "leoflow-staging-bench")
        yield BenchEnv(plane=plane, pg=pg, db_url=db_url, webhook=webhook, api=api, workdir=workdir)
    finally:
        if webhook is not None:
            webhook.stop()
        plane.stop()
        pg.stop()
        pg.cleanup()
