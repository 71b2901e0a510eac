"""The batched reclaim (one guarded transition per batch, deletes per chunk) and the settle's deletion watch,
on real PostgreSQL and the real control plane: rows that change under a batch are never deleted, a sweep
that loses its lock mid-batch deletes nothing more, and settling needs no re-listing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from shared.db import reclaim_batches, volumes_repo
from shared.db.locks import GC_LOCK_KEY
from shared.errors import LockLost
from shared.kube.deletions import DeletionWatch
from shared.objects import claim_key
from shared.volumes import DeleteReason, VolumeState
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import set_run

pytestmark = pytest.mark.e2e


def _record_deletes(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the PVCs the GC deletes (the real delete, observed)."""
    deleted: list[str] = []
    real = bench.kube.delete_claim

    def delete_claim(namespace: str, name: str, *, uid: str) -> bool:
        deleted.append(name)
        return real(namespace, name, uid=uid)

    monkeypatch.setattr(bench.kube, "delete_claim", delete_claim)
    return deleted


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _present(core: client.CoreV1Api, namespace: str) -> set[str]:
    return {str(p.metadata.name) for p in core.list_namespaced_persistent_volume_claim(namespace).items}


def _states(bench: Bench) -> dict[str, VolumeState]:
    return {r.run_id: r.state for r in bench.rows()}


def test_a_batch_transition_waits_for_an_admissions_share_read_and_a_cleared_run_keeps_its_volume(
        bench: Bench, core: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = bench.admit("etl", "a"), bench.admit("etl", "b")
    set_run(bench.engine, "etl", "a", "success", T0)
    set_run(bench.engine, "etl", "b", "success", T0)
    deleted = _record_deletes(bench, monkeypatch)
    admission = bench.engine.connect()  # the webhook's read of run a's row, FOR SHARE, its transaction open
    assert volumes_repo.live_volume(admission, bench.namespace, a, lock=True) is not None
    codes: list[int] = []
    sweep = threading.Thread(target=lambda: codes.append(bench.sweep()))
    sweep.start()
    try:
        def update_blocked() -> bool:  # the batch UPDATE waits on the admission's row lock
            with bench.engine.connect() as conn:
                return bool(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%staging_volumes%FOR UPDATE%'")).scalar())  # the batch's lock-first step
        _wait(update_blocked, "the batch transition never waited for the admission's share lock")
        set_run(bench.engine, "etl", "a", "running")  # the run was cleared: that admission's pod will run
    finally:
        admission.commit()
        admission.close()
        sweep.join(60)
    assert codes == [0]
    assert deleted == [b]  # run a's volume was never deleted ...
    assert _states(bench) == {"a": VolumeState.ACTIVE, "b": VolumeState.DELETED}  # ... and its row is active
    assert a in _present(core, bench.namespace)


def test_rows_that_change_under_a_batch_are_not_deleted(bench: Bench, core: client.CoreV1Api,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    names = {run: bench.admit("etl", run) for run in ("a", "b", "c")}
    for run in names:
        set_run(bench.engine, "etl", run, "success", T0)
    deleted = _record_deletes(bench, monkeypatch)
    real = reclaim_batches.begin_reclaims

    def begin_after_changes(*args: Any, **kwargs: Any) -> set[int]:
        set_run(bench.engine, "etl", "a", "running")  # run a cleared after planning
        with bench.engine.begin() as conn:  # row c closed by someone else after planning
            conn.execute(sa.text("UPDATE staging_volumes SET state = 'deleted', delete_reason = 'pvc_missing' "
                                 "WHERE run_id = 'c'"))
        return real(*args, **kwargs)

    monkeypatch.setattr(reclaim_batches, "begin_reclaims", begin_after_changes)
    assert bench.sweep() == 0
    assert deleted == [names["b"]]
    rows = {r.run_id: (r.state, r.delete_reason) for r in bench.rows()}
    assert rows == {"a": (VolumeState.ACTIVE, None), "b": (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED),
                    "c": (VolumeState.DELETED, DeleteReason.PVC_MISSING)}
    assert {names["a"], names["c"]} <= _present(core, bench.namespace)


def test_a_run_cleared_between_the_transition_and_the_delete_aborts_only_its_row(
        bench: Bench, core: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = bench.admit("etl", "a"), bench.admit("etl", "b")
    set_run(bench.engine, "etl", "a", "success", T0)
    set_run(bench.engine, "etl", "b", "success", T0)
    deleted = _record_deletes(bench, monkeypatch)
    real = reclaim_batches.begin_reclaims

    def begin_then_clear(*args: Any, **kwargs: Any) -> set[int]:
        started = real(*args, **kwargs)  # both rows go reclaiming ...
        set_run(bench.engine, "etl", "a", "running")  # ... and run a is cleared before the guarded deletes
        return started

    monkeypatch.setattr(reclaim_batches, "begin_reclaims", begin_then_clear)
    assert bench.sweep() == 0
    assert deleted == [b]
    [row_a] = [r for r in bench.rows() if r.run_id == "a"]
    assert (row_a.state, row_a.delete_reason, row_a.detail) == (
        VolumeState.ACTIVE, None, "run came back before its PVC was deleted")
    assert a in _present(core, bench.namespace)


def test_a_sweep_that_loses_its_lock_after_the_batch_transition_deletes_nothing(
        bench: Bench, core: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [bench.admit("etl", run) for run in ("a", "b")]
    for run in ("a", "b"):
        set_run(bench.engine, "etl", run, "success", T0)
    deleted = _record_deletes(bench, monkeypatch)
    real = reclaim_batches.begin_reclaims

    def begin_then_lose_the_lock(*args: Any, **kwargs: Any) -> set[int]:
        started = real(*args, **kwargs)
        with bench.engine.connect() as conn:  # the lock's session ends (an operator, a failover, a timeout)
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = :hi AND objid = :lo"), {"hi": GC_LOCK_KEY >> 32, "lo": GC_LOCK_KEY & 0xFFFFFFFF})
        return started

    monkeypatch.setattr(reclaim_batches, "begin_reclaims", begin_then_lose_the_lock)
    with pytest.raises(LockLost):
        bench.sweep()
    assert deleted == []  # no delete after the lock was lost
    assert set(_states(bench).values()) == {VolumeState.RECLAIMING}
    assert set(names) <= _present(core, bench.namespace)
    monkeypatch.setattr(reclaim_batches, "begin_reclaims", real)
    assert bench.sweep() == 0  # the next sweep resumes them
    assert set(_states(bench).values()) == {VolumeState.DELETED}


def test_the_deletion_watch_sees_deletions_after_the_listing_and_says_when_it_cannot(
        bench: Bench, core: client.CoreV1Api) -> None:
    a, b = bench.admit("etl", "a"), bench.admit("etl", "b")
    versions: list[str] = []
    keys = {k[1]: k for page in bench.kube.list_managed(claim_key, on_version=versions.append) for k in page}
    watch = DeletionWatch(bench.kube, versions[-1]).start()
    try:
        core.delete_namespaced_persistent_volume_claim(a, bench.namespace)
        assert watch.wait_for({keys[a], keys[b]}, timeout=30) == {keys[a]}
        assert watch.broken is None
    finally:
        watch.stop()
    refused = DeletionWatch(bench.kube, "not-a-version").start()  # the server refuses it, again and again
    try:
        _wait(lambda: refused.broken is not None, "a watch the server refuses never said it could not vouch")
        assert refused.wait_for({keys[b]}, timeout=5) == set()
    finally:
        refused.stop()
    assert DeletionWatch(bench.kube, "").start().broken  # a listing without a version: nothing to watch from


@pytest.mark.parametrize("watch_works", [True, False])
def test_settling_reads_the_watch_and_lists_again_only_without_it(
        bench: Bench, monkeypatch: pytest.MonkeyPatch, watch_works: bool) -> None:
    for run in ("a", "b", "c", "d"):
        bench.admit("etl", run)
        set_run(bench.engine, "etl", run, "success", T0)
    listings: list[int] = []
    real_list = bench.kube.list_managed

    def list_managed(*args: Any, **kwargs: Any) -> Any:
        listings.append(1)
        return real_list(*args, **kwargs)

    monkeypatch.setattr(bench.kube, "list_managed", list_managed)
    if not watch_works:
        real_start = DeletionWatch.start

        def broken_start(self: DeletionWatch) -> DeletionWatch:
            self.broken = "disabled by the test"
            return real_start(self)

        monkeypatch.setattr(DeletionWatch, "start", broken_start)
    assert bench.sweep(settle=30.0) == 0
    assert set(_states(bench).values()) == {VolumeState.DELETED}
    if watch_works:
        assert len(listings) == 1  # the sweep's own listing; settling read the watch
    else:
        assert len(listings) >= 2  # settling fell back to listing
