"""Database faults, injected for real: PostgreSQL stopped mid-load and restarted, a lock held on
staging_volumes, an unmigrated schema. Nothing is admitted without its volume; recovery is automatic."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from kubernetes import client

from tests.e2e.fault_support import FaultBench, admit, fault_bench, session_for
from tests.support.orchestrator import set_run
from tests.support.webhook import console_script

pytestmark = pytest.mark.e2e
__all__ = ["fault_bench"]
BUDGET = 10.0  # the webhook timeout the apiserver would apply


def test_database_down_denies_retriably_then_recovers_by_itself(fault_bench: FaultBench, namespace: str,
                                                                core: client.CoreV1Api) -> None:
    server = fault_bench.server("a")
    session = session_for(server)
    assert admit(session, server, namespace, "etl", "warm")["allowed"]
    stop_load = threading.Event()
    answers: list[dict[str, object]] = []

    def load() -> None:  # admissions keep arriving while the database goes away and comes back
        i = 0
        while not stop_load.is_set():
            i += 1
            started = time.monotonic()
            resp = admit(session_for(server), server, namespace, "etl", "warm" if i % 2 else f"cold-{i}")
            answers.append({"elapsed": time.monotonic() - started, **resp})

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)
    fault_bench.pg.stop()
    time.sleep(1.0)
    while_down = []
    for i in range(6):
        started = time.monotonic()
        resp = admit(session, server, namespace, "etl", "warm" if i % 2 else f"down-{i}")
        while_down.append((time.monotonic() - started, resp))
    ready = session.get(server.url + "/readyz", timeout=30)
    fault_bench.pg.start()
    time.sleep(1.0)
    stop_load.set()
    thread.join(timeout=60)
    for elapsed, resp in while_down:
        assert not resp["allowed"], resp
        status = resp["status"]
        assert isinstance(status, dict)
        assert status["code"] == 503 and "staging database cannot be reached" in status["message"], status
        assert "Retry" in status["message"]
        assert elapsed < BUDGET
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"
    assert all(float(str(a["elapsed"])) < BUDGET for a in answers)
    # Recovered without a restart of the server: the pool reconnects.
    for i in range(4):
        assert admit(session, server, namespace, "etl", f"after-{i}")["allowed"]
    assert session.get(server.url + "/readyz", timeout=30).status_code == 200
    # Nothing admitted without its volume: every allowed admission has a live row and a PVC.
    engine = fault_bench.engine()
    with engine.connect() as conn:
        live = {r.run_id for r in conn.execute(sa.text(
            "SELECT run_id FROM staging_volumes WHERE state = 'active' AND namespace = :ns"), {"ns": namespace})}
    engine.dispose()
    pvcs = {p.metadata.annotations["leoflow.io/run-id"]
            for p in core.list_namespaced_persistent_volume_claim(namespace).items}
    admitted_runs = {"warm"} | {f"after-{i}" for i in range(4)}
    assert admitted_runs <= live and admitted_runs <= pvcs


def test_gc_with_database_down_fails_clearly_then_converges(fault_bench: FaultBench, namespace: str,
                                                            kubeconfig: Path) -> None:
    server = fault_bench.server("a")
    session = session_for(server)
    assert admit(session, server, namespace, "etl", "done")["allowed"]
    engine = fault_bench.engine()
    set_run(engine, "etl", "done", "success", None)
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update(LEOFLOW_STAGING_DATABASE_URL=fault_bench.db_url, LEOFLOW_STAGING_KUBECONFIG=str(kubeconfig),
               LEOFLOW_STAGING_GC_DB_TIMEOUT="2", LEOFLOW_STAGING_ADOPT_MIN_AGE="0s")
    fault_bench.pg.stop()
    down = subprocess.run([console_script(), "gc"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 3 and "Traceback" not in down.stderr
    assert "taking the GC lock" in down.stderr or "staging_volumes" in down.stderr
    fault_bench.pg.start()
    up = subprocess.run([console_script(), "gc"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert up.returncode == 0, up.stderr[-1500:]
    assert '"event": "reclaimed"' in up.stderr


def test_slow_database_answers_inside_the_budget(fault_bench: FaultBench, namespace: str) -> None:
    server = fault_bench.server("a")
    session = session_for(server)
    assert admit(session, server, namespace, "etl", "warm")["allowed"]
    locker = sa.create_engine(fault_bench.db_url)
    with locker.connect() as conn:
        conn.execute(sa.text("LOCK TABLE staging_volumes IN ACCESS EXCLUSIVE MODE"))
        results = []
        for run in ("warm", "cold"):
            started = time.monotonic()
            resp = admit(session, server, namespace, "etl", run)
            results.append((time.monotonic() - started, resp))
        conn.rollback()
    locker.dispose()
    for elapsed, resp in results:
        assert not resp["allowed"] and elapsed < BUDGET
        status = resp["status"]
        assert isinstance(status, dict) and status["code"] in (503, 504)
    assert admit(session, server, namespace, "etl", "cold")["allowed"]  # fine once the lock is gone


def test_unmigrated_database_is_a_clear_denial_and_not_ready(fault_bench: FaultBench, namespace: str) -> None:
    empty = fault_bench.pg.create_database(f"empty_{uuid.uuid4().hex[:8]}")
    server = fault_bench.server("a", LEOFLOW_STAGING_DATABASE_URL=empty)
    session = session_for(server)
    resp = admit(session, server, namespace, "etl", "r")
    status = resp["status"]
    assert not resp["allowed"] and isinstance(status, dict)
    assert status["code"] == 503 and "leoflow-staging migrate" in status["message"]
    ready = session.get(server.url + "/readyz", timeout=30).json()
    assert any("run `leoflow-staging migrate`" in p for p in ready["problems"])
