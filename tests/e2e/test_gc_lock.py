"""The GC's single-flight lock cannot outlive its holder (issue 16.7), on real PostgreSQL and the control plane.

A holder that vanishes (backend terminated, process killed) or goes silent (frozen, hung: no touch within
the idle timeout) loses the lock, and the next sweep runs; while a holder is alive, another sweep is skipped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shared.db.locks import GC_LOCK_KEY, LOCK_APPLICATION_NAME, single_flight
from shared.errors import LockLost
from shared.volumes import VolumeState
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import set_run

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)  # type: ignore[attr-defined]
            and r.fields.get("event") == event]  # type: ignore[attr-defined]


def _holder_pids(engine: sa.Engine) -> list[int]:
    """Backends holding the GC lock (the 64-bit key shows as classid = high, objid = low 32 bits)."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :hi AND objid = :lo"),
            {"hi": GC_LOCK_KEY >> 32, "lo": GC_LOCK_KEY & 0xFFFFFFFF}).scalars())


def _reclaimable(bench: Bench, run: str) -> None:
    bench.admit("etl", run)
    set_run(bench.engine, "etl", run, "success", T0)


def _swept(bench: Bench, caplog: pytest.LogCaptureFixture) -> bool:
    """One sweep; True when it ran (took the lock), False when it was skipped."""
    skipped = len(_events(caplog, "sweep_skipped"))
    assert bench.sweep() == 0
    return len(_events(caplog, "sweep_skipped")) == skipped


def _holder_process(url: str, idle_timeout: float) -> subprocess.Popen[str]:
    """Another GC process holding the lock and touching it ten times a second (a live sweep)."""
    code = textwrap.dedent(f"""
        import sys, time
        import sqlalchemy as sa
        from shared.db.locks import single_flight
        engine = sa.create_engine({url!r})
        with single_flight(engine, idle_timeout={idle_timeout}) as lock:
            assert lock
            print("held", flush=True)
            while True:
                lock.touch()
                time.sleep(0.1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_is_transaction_scoped_and_named(bench: Bench) -> None:
    with single_flight(bench.engine) as held, bench.engine.connect() as conn:
        assert held
        [row] = conn.execute(sa.text(
            "SELECT a.state, a.application_name, l.mode FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.classid = :hi AND l.objid = :lo"),
            {"hi": GC_LOCK_KEY >> 32, "lo": GC_LOCK_KEY & 0xFFFFFFFF}).all()
        # Held inside an open transaction (so it goes with the transaction), by a backend an operator can find.
        assert (row.state, row.application_name, row.mode) == ("idle in transaction", LOCK_APPLICATION_NAME,
                                                               "ExclusiveLock")
    assert _holder_pids(bench.engine) == []  # released with the block


def test_a_holder_whose_backend_is_terminated_loses_the_lock(bench: Bench,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    _reclaimable(bench, "a")
    with single_flight(bench.engine) as held:
        assert held
        assert not _swept(bench, caplog)  # a live holder: the other sweep is skipped
        [pid] = _holder_pids(bench.engine)
        with bench.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        deadline = time.monotonic() + 10
        while _holder_pids(bench.engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _swept(bench, caplog)  # the next sweep gets the lock ...
        assert [r.state for r in bench.rows()] == [VolumeState.DELETED]  # ... and does its work
        with pytest.raises(LockLost, match="the GC lock was lost"):
            held.touch(force=True)  # the old holder learns it at its next touch
    # leaving the block after the loss raises nothing more


def test_a_holder_that_stops_touching_its_lock_loses_it(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    _reclaimable(bench, "b")
    with single_flight(bench.engine, idle_timeout=1.0) as held:
        held.touch(force=True)
        time.sleep(0.5)
        held.touch(force=True)  # touched in time: still held
        assert not _swept(bench, caplog)
        time.sleep(2.0)  # hung: no touch for twice the idle timeout
        assert _swept(bench, caplog)
        assert [r.state for r in bench.rows()] == [VolumeState.DELETED]
        with pytest.raises(LockLost):
            held.touch(force=True)


def test_a_frozen_holder_process_loses_the_lock_after_the_idle_timeout(
        bench: Bench, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # SIGSTOP: the process and its socket stay, no byte is sent, nothing is closed: as when the GC pod's node
    # dies or hangs. A session-level lock would stay held until TCP gives up on the peer (hours).
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    _reclaimable(bench, "c")
    holder = _holder_process(database_url, idle_timeout=2.0)
    try:
        time.sleep(3.0)  # longer than the idle timeout: a holder that touches keeps its lock
        assert not _swept(bench, caplog)
        os.kill(holder.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 15
        while not _swept(bench, caplog):
            assert time.monotonic() < deadline, "the frozen holder kept the GC lock"
            time.sleep(0.5)
        assert [r.state for r in bench.rows()] == [VolumeState.DELETED]
    finally:
        holder.kill()
        os.kill(holder.pid, signal.SIGCONT) if holder.poll() is None else None
        holder.wait(10)


def test_a_killed_holder_process_releases_the_lock_at_once(bench: Bench, database_url: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    _reclaimable(bench, "d")
    holder = _holder_process(database_url, idle_timeout=300.0)
    try:
        assert not _swept(bench, caplog)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 10
        while not _swept(bench, caplog):
            assert time.monotonic() < deadline, "the killed holder's lock stayed"
            time.sleep(0.2)
        assert [r.state for r in bench.rows()] == [VolumeState.DELETED]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_of_two_concurrent_sweeps_exactly_one_runs(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    _reclaimable(bench, "e")
    codes: list[int] = []
    blocker = bench.engine.connect()
    blocker.execute(sa.text("LOCK TABLE dag_run IN ACCESS EXCLUSIVE MODE"))  # the winner waits on its first read
    threads = [threading.Thread(target=lambda: codes.append(bench.sweep())) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while not _events(caplog, "sweep_skipped"):  # the loser returns at once, the winner still waits
            assert time.monotonic() < deadline, "neither sweep was skipped"
            time.sleep(0.05)
        assert len(_holder_pids(bench.engine)) == 1
    finally:
        blocker.rollback()
        blocker.close()
        for t in threads:
            t.join(60)
    assert codes == [0, 0]
    assert len(_events(caplog, "sweep_skipped")) == 1
    [summary] = _events(caplog, "sweep_summary")
    assert summary["reclaimed"] == {"run_succeeded": 1}
    assert [r.state for r in bench.rows()] == [VolumeState.DELETED]


def test_a_sweep_that_hangs_past_the_idle_timeout_loses_its_lock_and_stops(
        bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    _reclaimable(bench, "f")
    errors: list[Exception] = []

    def sweep() -> None:
        try:
            bench.sweep(lock_idle_seconds=1.0)
        except LockLost as exc:
            errors.append(exc)

    blocker = bench.engine.connect()
    blocker.execute(sa.text("LOCK TABLE dag_run IN ACCESS EXCLUSIVE MODE"))  # the sweep hangs on its first read
    thread = threading.Thread(target=sweep)
    try:
        thread.start()
        deadline = time.monotonic() + 20
        while not _holder_pids(bench.engine):
            assert time.monotonic() < deadline, "the sweep never took the lock"
            time.sleep(0.05)
        while _holder_pids(bench.engine):  # hung past the idle timeout: the server ends the lock's session
            assert time.monotonic() < deadline, "the hung sweep kept its lock"
            time.sleep(0.1)
    finally:
        blocker.rollback()
        blocker.close()
        thread.join(60)
    [lost] = errors  # when it resumes, its first touch finds the lock gone: it stops, having done nothing
    assert "the GC lock was lost" in str(lost)
    assert _events(caplog, "lock_lost")
    assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE]
    assert _swept(bench, caplog)  # the next sweep takes over
    assert [r.state for r in bench.rows()] == [VolumeState.DELETED]
