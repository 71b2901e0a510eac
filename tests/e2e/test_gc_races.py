"""GC sweeps racing clear+re-run admissions, and sweeps killed at random points.

The GC runs for real in a background thread (or as a SIGKILLed subprocess); the
orchestrator and the dispatcher's admissions run in the test thread. An observer wrapped
around the real PVC delete checks, at the moment of each deletion, that the run allowed it.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kubernetes import client

from gc_job.plan import GcPolicy
from gc_job.sweep import SweepConfig, Sweeper
from shared.db.migrate import upgrade
from shared.kube import KubeApi, make_api_client
from shared.settings import RunsTable
from shared.volumes import VolumeState
from tests.e2e.gc_support import Bench
from tests.support.orchestrator import create_runs_table, delete_run, set_run
from tests.support.webhook import console_script
from webhook.verdicts import Denied
from webhook.watched import watched_caches

pytestmark = pytest.mark.e2e
TTL = dt.timedelta(seconds=1)
RUNS = RunsTable()


class ObservedKube(KubeApi):
    """The real adapter; each PVC delete is checked against the run's committed state first."""

    def __init__(self, api: client.ApiClient, engine: sa.Engine) -> None:
        super().__init__(api, timeout=10)
        self.engine = engine
        self.violations: list[str] = []
        self.deletes = 0

    def delete_claim(self, namespace: str, name: str, *, uid: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT r.state, r.end_date FROM staging_volumes v LEFT JOIN dag_run r "
                "ON r.dag_id = v.dag_id AND r.run_id = v.run_id WHERE v.pvc_uid = :uid"), {"uid": uid}).first()
        now = dt.datetime.now(dt.UTC)
        allowed = row is not None and (
            (row.state is None and row.end_date is None)  # run absent (orphan)
            or row.state == "success"
            or (row.state == "failed" and row.end_date is not None and row.end_date <= now - TTL))
        if not allowed:
            self.violations.append(f"deleted {name} while its run was {row}")
        self.deletes += 1
        return super().delete_claim(namespace, name, uid=uid)


@pytest.fixture
def race_bench(database_url: str, kubeconfig: Path, namespace: str, rwx_class: str) -> Iterator[Bench]:
    engine = sa.create_engine(database_url, pool_size=10)
    upgrade(engine)
    create_runs_table(engine)
    kube = KubeApi(make_api_client(str(kubeconfig)), timeout=10)
    # The warm path reads the claim from the webhook's watch-fed cache, as in production: GC safety must not
    # depend on reading the PVC from the API every time.
    caches = watched_caches(make_api_client(str(kubeconfig)), kube, timeout=10, stale_after=1.0)
    caches.start()
    bench = Bench(engine=engine, kube=kube, namespace=namespace, read_claim=caches.read_claim)
    bench.clock = lambda: dt.datetime.now(dt.UTC)  # type: ignore[method-assign]
    yield bench
    caches.stop()
    engine.dispose()


def test_gc_racing_clear_and_rerun_never_breaks_a_live_run(race_bench: Bench, kubeconfig: Path,
                                                           core: client.CoreV1Api) -> None:
    iterations = int(os.environ.get("LEOFLOW_DEV_RACE_ITERATIONS", "200"))
    rng = random.Random(int(os.environ.get("LEOFLOW_DEV_RACE_SEED", "20261128")))
    bench = race_bench
    observed = ObservedKube(make_api_client(str(kubeconfig)), bench.engine)
    sweeper = Sweeper(engine=bench.engine, kube=observed, clock=bench.clock,
                      config=SweepConfig(runs=RUNS, batch_size=50, settle_seconds=0.0,
                                         policy=GcPolicy(failed_ttl=TTL, success_states=("success",),
                                                         failed_states=("failed",),
                                                         adopt_min_age=dt.timedelta(seconds=5))))
    stop = threading.Event()
    sweeps = 0
    sweep_errors: list[BaseException] = []

    def gc_loop() -> None:
        nonlocal sweeps
        while not stop.is_set():
            try:
                sweeper.run()
                sweeps += 1
            except BaseException as exc:
                sweep_errors.append(exc)
            time.sleep(rng.uniform(0, 0.01))

    runs = [("race", f"run-{i}") for i in range(4)]
    for dag, run in runs:
        set_run(bench.engine, dag, run, "running")
    admitted = denied = 0
    bad_admissions: list[str] = []
    thread = threading.Thread(target=gc_loop, daemon=True)
    thread.start()
    try:
        for _ in range(iterations):
            dag, run = rng.choice(runs)
            op = rng.random()
            if op < 0.5:  # the dispatcher starts a task of a running run
                set_run(bench.engine, dag, run, "running")
                try:
                    name = bench.admit(dag, run)
                except Denied as exc:
                    assert exc.verdict.retriable, exc.verdict.message
                    denied += 1
                    continue
                admitted += 1
                claim = bench.kube.read_claim(bench.namespace, name)
                if claim is None or claim.terminating:
                    bad_admissions.append(f"{name}: admitted with claim {claim}")
            elif op < 0.7:
                set_run(bench.engine, dag, run, "success", dt.datetime.now(dt.UTC))
            elif op < 0.85:
                ended = dt.datetime.now(dt.UTC) - rng.choice([dt.timedelta(0), 2 * TTL])
                set_run(bench.engine, dag, run, "failed", ended)
            elif op < 0.95:
                set_run(bench.engine, dag, run, "queued")  # clear: the run goes back to the queue
            else:
                delete_run(bench.engine, dag, run)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert sweep_errors == []
    assert observed.violations == []
    assert bad_admissions == []
    assert admitted > iterations // 10 and sweeps > 0 and observed.deletes > 0, (admitted, sweeps, observed.deletes)
    print(f"race: {iterations} steps, {admitted} admitted, {denied} retriable denials, {sweeps} sweeps, "
          f"{observed.deletes} PVC deletes")


def _gc_cli_env(database_url: str, kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update({"LEOFLOW_STAGING_DATABASE_URL": database_url, "LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig),
                "LEOFLOW_STAGING_ADOPT_MIN_AGE": "0s", "LEOFLOW_STAGING_GC_SETTLE_SECONDS": "0",
                "LEOFLOW_STAGING_GC_BATCH_SIZE": "4"})
    return env


def test_sweeps_killed_at_random_points_converge(race_bench: Bench, database_url: str, kubeconfig: Path,
                                                 core: client.CoreV1Api) -> None:
    kills = int(os.environ.get("LEOFLOW_DEV_KILL_RUNS", "12"))
    rng = random.Random(7)
    bench = race_bench
    keep = [("k", f"live-{i}") for i in range(4)]
    doomed = [("d", f"done-{i}") for i in range(16)]
    for dag, run in keep + doomed:
        bench.admit(dag, run)
    for dag, run in keep:
        set_run(bench.engine, dag, run, "running")
    for i, (dag, run) in enumerate(doomed):
        if i % 3 == 0:
            delete_run(bench.engine, dag, run)
        else:
            set_run(bench.engine, dag, run, "success" if i % 3 == 1 else "failed",
                    dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    env = _gc_cli_env(database_url, kubeconfig)
    for _ in range(kills):
        proc = subprocess.Popen([console_script(), "gc"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run([console_script(), "gc"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    # A PVC may still be Terminating for a moment after the last delete: one more sweep settles it.
    env["LEOFLOW_STAGING_GC_SETTLE_SECONDS"] = "10"
    subprocess.run([console_script(), "gc"], env=env, capture_output=True, text=True, timeout=120, check=True)
    rows = bench.rows()
    by_run = {r.run_id: r for r in rows}
    assert all(by_run[run].state is VolumeState.DELETED for _, run in doomed), [
        (r.run_id, r.state) for r in rows if r.state is not VolumeState.DELETED]
    assert all(by_run[run].state is VolumeState.ACTIVE for _, run in keep)
    assert not [r for r in rows if r.state is VolumeState.RECLAIMING]
    left = sorted(str(p.metadata.name) for p in core.list_namespaced_persistent_volume_claim(bench.namespace).items)
    assert left == sorted(str(by_run[run].pvc_name) for _, run in keep)
    assert len([r for r in rows if r.state is VolumeState.ACTIVE]) == len(keep)  # no duplicates from adoption
