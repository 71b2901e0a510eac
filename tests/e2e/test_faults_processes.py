"""Several webhook replicas at once, a webhook SIGKILLed mid-admission, GC sweeps SIGKILLed at
random points: exactly one PVC and one live row per run, no disk leaked, nothing deleted that
the rules keep."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from kubernetes import client

from tests.e2e.fault_support import FaultBench, admit, fault_bench, session_for
from tests.support.orchestrator import delete_run, set_run
from tests.support.webhook import console_script

pytestmark = pytest.mark.e2e
__all__ = ["fault_bench"]


def _live(bench: FaultBench, namespace: str) -> list[tuple[str, str, str]]:
    engine = bench.engine()
    with engine.connect() as conn:
        rows = [(r.run_id, r.pvc_name, r.pvc_uid) for r in conn.execute(sa.text(
            "SELECT run_id, pvc_name, pvc_uid FROM staging_volumes WHERE state <> 'deleted' AND namespace = :ns"),
            {"ns": namespace})]
    engine.dispose()
    return rows


def _reclaiming(engine: sa.Engine, namespace: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text("SELECT 1 FROM staging_volumes WHERE namespace = :ns AND state = "
                                         "'reclaiming' LIMIT 1"), {"ns": namespace}).first())


def _gc_env(bench: FaultBench, kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update(LEOFLOW_STAGING_DATABASE_URL=bench.db_url, LEOFLOW_STAGING_KUBECONFIG=str(kubeconfig),
               LEOFLOW_STAGING_ADOPT_MIN_AGE="0s", LEOFLOW_STAGING_GC_SETTLE_SECONDS="0",
               LEOFLOW_STAGING_GC_BATCH_SIZE="5")
    return env


def test_three_replicas_one_pvc_and_one_row_per_run(fault_bench: FaultBench, namespace: str,
                                                    core: client.CoreV1Api) -> None:
    servers = [fault_bench.server(f"r{i}") for i in range(3)]
    pods = int(os.environ.get("LEOFLOW_DEV_REPLICA_PODS", "210"))
    runs = [f"run-{i}" for i in range(10)]

    def one(i: int) -> bool:
        server = servers[i % 3]
        return bool(admit(session_for(server), server, namespace, "fan", runs[i % 10])["allowed"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        allowed = list(pool.map(one, range(pods)))
    assert all(allowed)
    live = _live(fault_bench, namespace)
    assert sorted(r for r, _, _ in live) == sorted(runs)  # one live row per run
    claims = core.list_namespaced_persistent_volume_claim(namespace).items
    assert len(claims) == 10
    assert {(c.metadata.name, c.metadata.uid) for c in claims} == {(n, u) for _, n, u in live}


def test_a_webhook_killed_mid_admission_converges(fault_bench: FaultBench, namespace: str, kubeconfig: Path,
                                                  core: client.CoreV1Api) -> None:
    victim = fault_bench.server("victim")
    runs = [f"k-{i}" for i in range(40)]
    engine = fault_bench.engine()
    for run in runs:
        set_run(engine, "kill", run, "running")
    engine.dispose()

    def one(run: str) -> None:
        with contextlib.suppress(Exception):  # the server dies under us on purpose
            admit(session_for(victim), victim, namespace, "kill", run)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, run) for run in runs]
        time.sleep(0.3)
        assert victim.process is not None
        os.killpg(victim.process.pid, signal.SIGKILL)  # master and workers, mid-flight
        concurrent.futures.wait(futures, timeout=60)
    sweep = subprocess.run([console_script(), "gc"], env=_gc_env(fault_bench, kubeconfig), capture_output=True,
                           text=True, timeout=120, check=False)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    live = {(n, u) for _, n, u in _live(fault_bench, namespace)}
    claims = {(c.metadata.name, c.metadata.uid) for c in core.list_namespaced_persistent_volume_claim(namespace).items
              if not c.metadata.deletion_timestamp}
    assert claims == live  # every PVC recorded (adopted), every live row has its PVC: no disk leaked
    # and the survivors still work: a fresh replica admits the same runs onto the same volumes
    fresh = fault_bench.server("fresh")
    assert all(admit(session_for(fresh), fresh, namespace, "kill", run)["allowed"] for run in runs[:5])
    assert {(n, u) for _, n, u in _live(fault_bench, namespace)} >= live


def test_gc_sigkilled_at_random_points_many_times(fault_bench: FaultBench, namespace: str, kubeconfig: Path,
                                                  core: client.CoreV1Api) -> None:
    # 30 in `make test` (still catches reclaiming rows left unresumed by a killed sweep); `make soak` 100.
    kills = int(os.environ.get("LEOFLOW_DEV_KILL_RUNS", "30"))
    rng = random.Random(int(os.environ.get("LEOFLOW_DEV_RACE_SEED", "11")))
    server = fault_bench.server("a")
    session = session_for(server)
    engine = fault_bench.engine()
    keep, doomed = [f"live-{i}" for i in range(5)], []
    for run in keep:
        assert admit(session, server, namespace, "gc", run)["allowed"]
        set_run(engine, "gc", run, "running")
    env = _gc_env(fault_bench, kubeconfig)
    done = 0
    for k in range(kills):
        if k % 3 == 0:  # keep feeding reclaimable volumes so kills land mid-reclaim
            for j in range(4):
                run = f"done-{k}-{j}"
                assert admit(session, server, namespace, "gc", run)["allowed"]
                doomed.append(run)
                if j == 0:
                    delete_run(engine, "gc", run)
                else:
                    set_run(engine, "gc", run, "success" if j % 2 else "failed",
                            dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
        proc = subprocess.Popen([console_script(), "gc"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # The kill lands at a random point in the sweep, not in the program's start-up (which takes longer on a
        # busy machine): a random delay after the sweep first holds a row in `reclaiming` (when it reclaims
        # anything), else a random moment up to the usual length of a sweep.
        deadline = time.monotonic() + rng.uniform(0.4, 1.4) + 3.0
        while proc.poll() is None and time.monotonic() < deadline and not _reclaiming(engine, namespace):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
    engine.dispose()
    final = subprocess.run([console_script(), "gc"], env=env | {"LEOFLOW_STAGING_GC_SETTLE_SECONDS": "20"},
                           capture_output=True, text=True, timeout=180, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    engine = fault_bench.engine()
    with engine.connect() as conn:
        states: dict[str, str] = dict(conn.execute(sa.text(
            "SELECT run_id, state FROM staging_volumes WHERE namespace = :ns AND state <> 'deleted' "
            "OR (namespace = :ns AND run_id LIKE 'done-%')"), {"ns": namespace}).all())
    engine.dispose()
    assert all(states[r] == "deleted" for r in doomed), {r: states[r] for r in doomed if states[r] != "deleted"}
    assert all(states[r] == "active" for r in keep)
    assert "reclaiming" not in states.values()
    left = {c.metadata.annotations["leoflow.io/run-id"] for c in core.list_namespaced_persistent_volume_claim(
        namespace).items}
    assert left == set(keep)
    print(f"gc kills: {done} SIGKILLs, {len(doomed)} volumes reclaimed, {len(keep)} kept")
