"""Sustained load: warm and cold admissions plus GC sweeps for LEOFLOW_DEV_SOAK_SECONDS
(short in CI, >= 600 locally): zero errors; p99 and server RSS reported first vs last."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from gc_job.plan import GcPolicy
from gc_job.sweep import SweepConfig, Sweeper
from shared.kube import KubeApi, make_api_client
from shared.settings import RunsTable
from tests.e2e.fault_support import FaultBench, admit, fault_bench, session_for
from tests.support.orchestrator import set_run

pytestmark = pytest.mark.e2e
__all__ = ["fault_bench"]
SECONDS = float(os.environ.get("LEOFLOW_DEV_SOAK_SECONDS", "30"))


def _rss_kb(pid: int) -> int:
    """RSS of a process and its children (the gunicorn master and workers)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _slope_per_min(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    return 60 * sum((t - mx) * (v - my) for t, v in samples) / var if var else 0.0


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


@pytest.mark.timeout(SECONDS + 300)
def test_soak(fault_bench: FaultBench, namespace: str, kubeconfig: Path, core: client.CoreV1Api) -> None:
    server = fault_bench.server("soak")
    engine = fault_bench.engine()
    set_run(engine, "soak", "warm", "running")
    kube = KubeApi(make_api_client(str(kubeconfig)), timeout=10)
    sweeper = Sweeper(engine=engine, kube=kube, config=SweepConfig(
        runs=RunsTable(), settle_seconds=0, policy=GcPolicy(
            failed_ttl=dt.timedelta(hours=24), success_states=("success",), failed_states=("failed",),
            adopt_min_age=dt.timedelta(seconds=30))))
    stop = threading.Event()
    samples: list[tuple[float, float, bool]] = []  # (t, latency, ok)
    rss: list[tuple[float, int]] = []
    sweeps: list[int] = []
    errors: list[str] = []
    started = time.monotonic()
    assert server.process is not None

    def admissions(seed: int) -> None:
        rng = random.Random(seed)
        session = session_for(server)
        i = 0
        while not stop.is_set():
            i += 1
            cold = rng.random() < 0.2
            run = f"cold-{seed}-{i}" if cold else "warm"
            t0 = time.monotonic()
            try:
                ok = bool(admit(session, server, namespace, "soak", run)["allowed"])
            except Exception as exc:
                ok = False
                errors.append(repr(exc))
            samples.append((t0 - started, time.monotonic() - t0, ok))
            if cold:  # the cold run finishes at once: the GC reclaims it on its next sweep
                set_run(engine, "soak", run, "success", dt.datetime.now(dt.UTC))

    def gc_loop() -> None:
        while not stop.wait(2.0):
            sweeps.append(sweeper.run())

    def rss_loop() -> None:
        while not stop.wait(1.0):
            rss.append((time.monotonic() - started, _rss_kb(server.process.pid)))

    threads = [threading.Thread(target=admissions, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=gc_loop), threading.Thread(target=rss_loop)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    engine.dispose()
    failures = [s for s in samples if not s[2]]
    window = SECONDS / 5
    first = [lat for t, lat, _ in samples if t < window]
    last = [lat for t, lat, _ in samples if t >= SECONDS - window]
    steady = [r for r in rss if r[0] >= min(10.0, SECONDS / 3)]  # after warm-up
    figures = {
        "seconds": SECONDS, "admissions": len(samples), "errors": len(failures), "sweeps": len(sweeps),
        "failed_sweeps": sum(1 for code in sweeps if code != 0),
        "p99_first_ms": round(_p99(first) * 1000, 2), "p99_last_ms": round(_p99(last) * 1000, 2),
        "rss_first_mb": round(steady[0][1] / 1024, 1) if steady else None,
        "rss_last_mb": round(steady[-1][1] / 1024, 1) if steady else None,
        "rss_slope_kb_per_min": round(_slope_per_min(steady), 1),
    }
    print("soak: " + json.dumps(figures))
    report = os.environ.get("LEOFLOW_DEV_SOAK_REPORT")
    if report:
        Path(report).write_text(json.dumps(figures, indent=2) + "\n")
    assert errors == [] and failures == [], (errors[:3], len(failures))
    assert sweeps and all(code == 0 for code in sweeps)
    assert len(samples) > SECONDS  # it really ran under load
