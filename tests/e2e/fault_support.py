"""A fault bench: its own PostgreSQL (stoppable, restartable on the same port) and its own
`leoflow-staging serve` processes, so faults never disturb the other tests' servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from devenv.webhook import WebhookProcess
from shared.db.migrate import upgrade
from tests.support.orchestrator import create_runs_table
from tests.support.pods import admission_review, task_pod


@dataclass
class FaultBench:
    pg: Postgres
    db_url: str
    plane: ControlPlane
    workdir: Path
    servers: list[WebhookProcess] = field(default_factory=list)

    def server(self, name: str, **env: str) -> WebhookProcess:
        process = WebhookProcess(workdir=self.workdir / name, env={
            "LEOFLOW_STAGING_DATABASE_URL": self.db_url,
            "LEOFLOW_STAGING_KUBECONFIG": str(self.plane.kubeconfig_path),
            "LEOFLOW_STAGING_DB_TIMEOUT": "1", "LEOFLOW_STAGING_KUBE_TIMEOUT": "2",
            "LEOFLOW_STAGING_REQUEST_BUDGET": "7", "LEOFLOW_STAGING_WORKERS": "2", **env})
        process.start()
        self.servers.append(process)
        return process

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.db_url)


def session_for(server: WebhookProcess) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(server.ca_file)
    return session


def admit(session: requests.Session, server: WebhookProcess, namespace: str, dag: str, run: str,
          **pod_kw: Any) -> dict[str, Any]:
    """POST one pod CREATE review; returns the response part (raises on a non-200 HTTP status)."""
    uid = str(uuid.uuid4())
    resp = session.post(server.url + "/mutate", json=admission_review(task_pod(dag, run, **pod_kw), namespace, uid=uid),
                        timeout=30)
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    assert body["response"]["uid"] == uid
    response: dict[str, Any] = body["response"]
    return response


@pytest.fixture
def fault_bench(fault_postgres: Postgres, control_plane: ControlPlane, tmp_path: Path,
                rwx_class: str) -> Iterator[FaultBench]:
    pg = fault_postgres
    if pg.process is None or not pg.process.alive():  # a test that stopped it failed before its restart
        pg.start()
    url = pg.create_database(f"fault_{uuid.uuid4().hex[:10]}")
    engine = sa.create_engine(url)
    upgrade(engine)
    create_runs_table(engine)
    engine.dispose()
    bench = FaultBench(pg=pg, db_url=url, plane=control_plane, workdir=tmp_path)
    try:
        yield bench
    finally:
        for s in bench.servers:
            s.stop()
        if pg.process is None or not pg.process.alive():
            pg.start()
