"""Applying a GC plan through race-safe transitions.

Reclaiming one row:
  1. ``active -> reclaiming`` in one UPDATE whose WHERE re-checks the run at that moment;
  2. in one transaction: re-check the run again holding a share lock on its row (PostgreSQL),
     then delete the PVC with a uid precondition (a PVC re-created under the same name is never
     touched), or put the row back to ``active`` if the run came back;
  3. once the PVC has disappeared, ``reclaiming -> deleted``. A claim still held only by pods that can
     never run again (Succeeded or Failed) gets those pods deleted, under the same run re-check and
     each with a uid precondition; a Pending, Running or Unknown pod is never touched.
A crash anywhere leaves ``active`` or ``reclaiming`` rows that the next sweep finishes.

``reclaim_batch`` does the same steps for many rows at once: step 1 is one UPDATE per reason for the whole
batch (same guards, RETURNING the rows it moved), step 2 one transaction per chunk that share-locks all the
chunk's runs in one statement, aborts those whose run came back, then issues the chunk's deletes in
parallel before it commits, step 3 one UPDATE per settle poll. The sweep's lock is checked before step 1
and before each chunk's deletes: a sweep that lost its lock deletes nothing more.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gc_job.directory_reclaim import DirectoryReclaimer
from gc_job.plan import Action, Decision, GcPolicy, recheck, reclaim_reason, releasable_holders
from gc_job.results import Outcome, Result
from shared.db import reclaim_batches, runs_repo, volumes_repo
from shared.db.engine import translate_errors
from shared.errors import LockLost, StagingError
from shared.kube import KubeApi
from shared.kube.api import UidMismatch
from shared.kube.deletions import DeletionWatch
from shared.objects import PodUse
from shared.settings import RunsTable
from shared.volumes import DeleteReason, NewVolume, VolumeRecord, VolumeState

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("leoflow_staging.gc")


def _nothing() -> None:
    """The default ``touch``: nothing to keep alive."""
Clock = Callable[[], dt.datetime]
GC_REASONS = (DeleteReason.ORPHANED, DeleteReason.RUN_SUCCEEDED, DeleteReason.TTL_EXPIRED)
# ``map`` over the sweep's worker threads (results in order), e.g. ``ThreadPoolExecutor.map``.
ParallelMap = Callable[[Callable[[Decision], object], Iterable[Decision]], Iterator[object]]
GONE = "gone"  # a delete that found the PVC (of that uid) already gone


def batchable(d: Decision) -> bool:
    """A fresh reclaim (an ``active`` row with a GC reason and a PVC uid) that ``reclaim_batch`` may take;
    every other action (resumes, heals, adoptions, rows without a uid) goes one at a time through ``apply``."""
    v = d.volume
    return (d.action is Action.RECLAIM and v is not None and v.state is VolumeState.ACTIVE
            and d.reason in GC_REASONS and bool(v.pvc_uid) and v.shared_claim is None)


class Executor:
    """Applies decisions; every failure becomes a FAILED result, never an exception."""

    def __init__(self, *, engine: sa.Engine, kube: KubeApi, runs: RunsTable, policy: GcPolicy,
                 clock: Clock, delete_finished_pods: bool = True,
                 on_event: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self._engine, self._kube, self._runs, self._policy, self._clock = engine, kube, runs, policy, clock
        self.lock_runs = True  # share-lock the run's row around the delete (needs UPDATE privilege)
        self.deletions: DeletionWatch | None = None  # PVC deletions since the sweep's listing (settle reads it)
        self.delete_finished_pods = delete_finished_pods
        self.directories: DirectoryReclaimer | None = None  # the shared-claim mode's rows (needs the image)
        self._on_event = on_event or (lambda level, fields: log.log(level, fields.get("event", ""),
                                                                     extra={"fields": fields}))

    def apply(self, decision: Decision) -> Result:
        try:
            if decision.action is Action.ADOPT:
                return self._adopt(decision)
            if decision.action is Action.HEAL:
                return self._heal(decision)
            if decision.action is Action.RECLAIM:
                return self._reclaim(decision)
            return Result(decision, Outcome.KEPT, decision.why)
        except (StagingError, UidMismatch) as exc:
            return Result(decision, Outcome.FAILED, str(exc))
        except Exception as exc:  # one bad object never stops the sweep: the item fails, the rest goes on
            log.exception("unexpected error on %s/%s", decision.namespace, decision.pvc_name)
            return Result(decision, Outcome.FAILED, f"unexpected {type(exc).__name__}: {exc}")

    def _adopt(self, d: Decision) -> Result:
        claim = d.claim
        assert claim is not None
        volume = NewVolume(namespace=claim.namespace, pvc_name=claim.name, pvc_uid=claim.uid, dag_id=d.dag_id,
                           run_id=d.run_id, storage_class=claim.storage_class or "", size=claim.size or "")
        with translate_errors("adopting a PVC"), self._engine.begin() as conn:
            volumes_repo.insert_active(conn, volume, now=claim.created_at or self._clock())
        return Result(d, Outcome.ADOPTED, "recorded a PVC that had no live row")

    def _heal(self, d: Decision) -> Result:
        v = d.volume
        assert v is not None
        claim = self._kube.read_claim(v.namespace, v.pvc_name)  # confirm before closing the row
        if claim is not None and claim.uid == v.pvc_uid:
            return Result(d, Outcome.KEPT, "PVC present after all")
        with translate_errors("closing a row whose PVC is gone"), self._engine.begin() as conn:
            volumes_repo.close_missing(conn, v.id, now=self._clock(), detail="PVC not found by the GC")
        return Result(d, Outcome.HEALED, "row closed: its PVC no longer exists")

    def _reclaim(self, d: Decision) -> Result:
        v, reason = d.volume, d.reason
        assert v is not None
        if reason is None or reason is DeleteReason.PVC_MISSING:
            return Result(d, Outcome.FAILED, "reclaiming row without a GC reason; left for a person")
        if not v.pvc_uid:  # before any transition: such a row must not get stuck in reclaiming
            return Result(d, Outcome.FAILED, "row has no PVC uid; cannot delete safely")
        if v.shared_claim is not None:
            if self.directories is None:
                return Result(d, Outcome.FAILED, "a shared-claim directory, and this GC has no image for its "
                              "cleanup pods (set LEOFLOW_STAGING_IMAGE)")
            self.directories.lock_runs, self.directories.on_event = self.lock_runs, self._on_event
            return self.directories.reclaim(d, reason)
        now = self._clock()
        ttl = self._policy.failed_ttl
        claim = self._kube.read_claim(v.namespace, v.pvc_name)  # one read serves both states
        if v.state is VolumeState.ACTIVE:
            if claim is None or claim.uid != v.pvc_uid:  # deleted by someone else first: the audit says so
                return self._heal(replace(d, action=Action.HEAL, reason=DeleteReason.PVC_MISSING,
                                          why="the PVC no longer exists"))
            condition = runs_repo.reclaimable_condition(self._runs, reason, now=now, failed_ttl=ttl)
            with translate_errors("starting a reclaim"), self._engine.begin() as conn:
                if not volumes_repo.begin_reclaim(conn, v.id, reason=reason, now=now, still_reclaimable=condition):
                    return Result(d, Outcome.KEPT, "the run changed since planning; kept")
        if claim is None or claim.uid != v.pvc_uid:  # resuming: the delete this row waited for has happened
            return self._finish(d, v)
        if not claim.terminating:
            with translate_errors("deleting the PVC"), self._engine.begin() as conn:
                run = runs_repo.read_run_locked(conn, self._runs, v.run, lock=self.lock_runs)
                current = recheck(reason, run, now=self._clock(), policy=self._policy)
                if not isinstance(current, DeleteReason):
                    volumes_repo.abort_reclaim(conn, v.id, detail="run came back before its PVC was deleted")
                    return Result(d, Outcome.ABORTED, "the run came back before the delete; the row is active again")
                if current is not reason:  # e.g. failed -> success: still reclaimable; the audit gives today's reason
                    volumes_repo.set_reason(conn, v.id, current)
                    d = replace(d, reason=current, run_state=run.state if run else None,
                                run_end=run.end_date if run else None)
                if not self._kube.delete_claim(v.namespace, v.pvc_name, uid=v.pvc_uid):
                    # Gone (or its name taken by another PVC) before our delete: the GC deleted nothing, and the
                    # audit must not say it did (the batch path does the same).
                    reclaim_batches.close_missing_reclaiming(
                        conn, [v.id], now=self._clock(), detail="PVC not found by the GC when it came to delete it")
                    return Result(replace(d, action=Action.HEAL, reason=DeleteReason.PVC_MISSING,
                                          why="the PVC no longer exists"),
                                  Outcome.HEALED, "row closed: its PVC no longer exists")
        return Result(d, Outcome.TERMINATING, "delete issued")

    def _finish(self, d: Decision, v: VolumeRecord) -> Result:
        with translate_errors("finishing a reclaim"), self._engine.begin() as conn:
            return self._finish_in(conn, d, v)

    def _finish_in(self, conn: sa.Connection, d: Decision, v: VolumeRecord) -> Result:
        volumes_repo.finish_reclaim(conn, v.id, now=self._clock())
        return Result(d, Outcome.RECLAIMED, "PVC gone; row deleted")

    def _present(self, wanted: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """Which of ``wanted`` (namespace, name, uid) are still PVCs of ours: one paginated LIST, not a GET per
        row; only the wanted keys are kept (memory stays that of the rows waited for, not of the listing)."""
        return {key for page in self._kube.list_managed_claims() for c in page
                if (key := (c.namespace, c.name, c.uid)) in wanted}

    def _finish_many(self, gone: list[Result]) -> list[Result]:
        """``reclaiming -> deleted`` for rows whose PVC has disappeared: one statement for all of them."""
        if not gone:
            return []
        try:
            with translate_errors("finishing reclaims"), self._engine.begin() as conn:
                reclaim_batches.finish_reclaims(conn, [_row_id(r.decision) for r in gone], now=self._clock())
        except StagingError as exc:
            return [Result(r.decision, Outcome.FAILED, str(exc)) for r in gone]
        return [Result(r.decision, Outcome.RECLAIMED, "PVC gone; row deleted") for r in gone]

    def _wait_gone(self, waiting: list[Result], *, grace: float,
                   touch: Callable[[], None] = _nothing) -> tuple[list[Result], list[Result]]:
        """Finish the rows whose PVC disappears within ``grace`` seconds; return (done, still held).
        ``touch`` is called between steps (the sweep keeps its single-flight lock alive with it).
        With a ``deletions`` watch (the sweep starts one on its listing) the disappearances are read from it;
        without one, or once it cannot vouch for what it saw, by one LIST of our PVCs per poll."""
        deadline = time.monotonic() + grace
        done: list[Result] = []
        while waiting:
            touch()
            keys = {r: _key(r) for r in waiting}
            watch = self.deletions
            if watch is not None and watch.broken is None:
                present = set(keys.values()) - watch.wait_for(set(keys.values()),
                                                             timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            else:
                try:
                    present = self._present(set(keys.values()))
                except StagingError as exc:
                    return done + [Result(r.decision, Outcome.FAILED, str(exc)) for r in waiting], []
            still = [r for r in waiting if keys[r] in present]
            done += self._finish_many([r for r in waiting if keys[r] not in present])
            waiting = still
            if not waiting or time.monotonic() >= deadline:
                break
            if watch is None or watch.broken is not None:
                time.sleep(0.5)
        return done, waiting

    def reclaim_batch(self, decisions: Sequence[Decision], *, touch: Callable[[], None], parallel: ParallelMap,
                      chunk: int = 64) -> list[Result]:
        """Reclaim many ``batchable`` decisions: the guarded ``active -> reclaiming`` transition for all in one
        statement per reason, then per ``chunk`` the run re-check under share locks and the deletes.
        ``touch`` must raise (``LockLost``) when the sweep's lock is gone: it is called before the transition
        and before each chunk's deletes, so a sweep that lost its lock starts no transition and no delete
        (rows already ``reclaiming`` are resumed by the next sweep)."""
        if not decisions:
            return []
        now = self._clock()
        by_reason: dict[DeleteReason, list[Decision]] = defaultdict(list)
        for d in decisions:
            assert d.reason is not None and d.volume is not None
            by_reason[d.reason].append(d)
        touch()
        try:
            with translate_errors("starting reclaims"), self._engine.begin() as conn:
                started: set[int] = set()
                for reason, group in by_reason.items():
                    condition = runs_repo.reclaimable_condition(self._runs, reason, now=now,
                                                                failed_ttl=self._policy.failed_ttl)
                    started |= reclaim_batches.begin_reclaims(conn, [_row_id(d) for d in group], reason=reason,
                                                              now=now, still_reclaimable=condition)
        except StagingError as exc:  # nothing was moved: the rows stay active for the next sweep
            return [Result(d, Outcome.FAILED, str(exc)) for d in decisions]
        results = [Result(d, Outcome.KEPT, "the run changed since planning; kept")
                   for d in decisions if _row_id(d) not in started]
        marked = [d for d in decisions if _row_id(d) in started]
        for first in range(0, len(marked), chunk):
            results += self._delete_chunk(marked[first:first + chunk], touch=touch, parallel=parallel)
        return results

    def _delete_chunk(self, chunk: list[Decision], *, touch: Callable[[], None],
                      parallel: ParallelMap) -> list[Result]:
        """Step 2 for rows already ``reclaiming``: one transaction holding share locks on their runs (one
        statement), aborting the rows whose run came back, deleting the others' PVCs with uid preconditions."""
        results: list[Result] = []
        try:
            with translate_errors("deleting PVCs"), self._engine.begin() as conn:
                runs = runs_repo.read_runs_locked(conn, self._runs, (_volume(d).run for d in chunk),
                                                  lock=self.lock_runs)
                now = self._clock()
                go: list[Decision] = []
                back: list[Decision] = []
                moved: dict[DeleteReason, list[Decision]] = defaultdict(list)
                for planned in chunk:
                    run = runs.get(_volume(planned).run)
                    current = reclaim_reason(run, now=now, policy=self._policy)
                    if not isinstance(current, DeleteReason):
                        back.append(planned)
                        continue
                    d = planned
                    if current is not d.reason:  # e.g. failed -> success: the audit gives today's reason
                        d = replace(d, reason=current, run_state=run.state if run else None,
                                    run_end=run.end_date if run else None)
                        moved[current].append(d)
                    go.append(d)
                touch()  # the last check before deleting: a lost lock stops here, the rows stay reclaiming
                outcomes = list(parallel(self._delete_one, go))
                # The row writes come last, just before the commit: the runs' share locks already hold for the
                # whole transaction, and a row locked for writing would make a returning run's pods wait on it
                # (the webhook reads the row FOR SHARE) through every delete of the chunk.
                reclaim_batches.abort_reclaims(conn, [_row_id(d) for d in back],
                                               detail="run came back before its PVC was deleted")
                results += [Result(d, Outcome.ABORTED, "the run came back before the delete; the row is active again")
                            for d in back]
                for reason, group in moved.items():
                    reclaim_batches.set_reasons(conn, [_row_id(d) for d in group], reason)
                gone = [d for d, o in zip(go, outcomes, strict=True) if o == GONE]
                reclaim_batches.close_missing_reclaiming(
                    conn, [_row_id(d) for d in gone], now=self._clock(),
                    detail="PVC not found by the GC when it came to delete it")
                for d, o in zip(go, outcomes, strict=True):
                    if o is True:
                        results.append(Result(d, Outcome.TERMINATING, "delete issued"))
                    elif o == GONE:
                        results.append(Result(replace(d, action=Action.HEAL, reason=DeleteReason.PVC_MISSING,
                                                      why="the PVC no longer exists"),
                                              Outcome.HEALED, "row closed: its PVC no longer exists"))
                    else:
                        results.append(Result(d, Outcome.FAILED, str(o)))
        except LockLost:
            raise  # the sweep stops; the chunk's rows stay reclaiming and the next sweep resumes them
        except StagingError as exc:  # rolled back: the rows stay reclaiming and the next sweep resumes them;
            # deletes already issued are real, and settling finishes those rows as usual
            issued = [r for r in results if r.outcome is Outcome.TERMINATING]
            ids = {_row_id(r.decision) for r in issued}
            results = issued + [Result(d, Outcome.FAILED, str(exc)) for d in chunk if _row_id(d) not in ids]
        return results

    def _delete_one(self, d: Decision) -> object:
        """True (delete issued), ``GONE``, or the error's text; never raises (runs on a worker thread)."""
        v = _volume(d)
        try:
            return GONE if not self._kube.delete_claim(v.namespace, v.pvc_name, uid=v.pvc_uid or "") else True
        except UidMismatch:  # the name belongs to another PVC now: the one of this uid no longer exists
            return GONE
        except StagingError as exc:
            return str(exc)
        except Exception as exc:  # one bad object never stops the sweep
            log.exception("unexpected error deleting %s/%s", v.namespace, v.pvc_name)
            return f"unexpected {type(exc).__name__}: {exc}"

    def _release_finished_pods(self, d: Decision, pods: list[PodUse]) -> list[PodUse]:
        """Delete the finished pods (when enabled) and the inspect pods that hold a reclaimed claim, under the
        same run re-check as the claim's delete (a clear + re-run in between leaves them alone). Returns the pods
        deleted."""
        v, reason = d.volume, d.reason
        assert v is not None
        deleted: list[PodUse] = []
        for pod in releasable_holders(pods, finished=self.delete_finished_pods):
            # One short transaction per pod: the run's row is share-locked only around that pod's delete,
            # so a clear waits at most one API call, and no delete ever outlives its guard.
            with translate_errors("deleting a finished pod"), self._engine.begin() as conn:
                run = runs_repo.read_run_locked(conn, self._runs, v.run, lock=self.lock_runs)
                verdict = recheck(reason, run, now=self._clock(), policy=self._policy) if reason else \
                    reclaim_reason(run, now=self._clock(), policy=self._policy)
                if not isinstance(verdict, DeleteReason):
                    return deleted  # the run came back: its pods are left alone
                if self._kube.delete_pod(v.namespace, pod.name, uid=pod.uid):
                    deleted.append(pod)
                    self._on_event(logging.INFO, {
                        "event": "inspect_pod_deleted" if pod.inspect else "finished_pod_deleted",
                        "namespace": v.namespace, "pod": pod.name, "phase": pod.phase, "pvc": v.pvc_name,
                        "dag_id": v.dag_id, "run_id": v.run_id, "reason": reason.value if reason else None,
                        "detail": "an inspect pod held the reclaimed claim (it only reads the files)" if pod.inspect
                        else f"{pod.phase} pod held the reclaimed claim; it can never run again"})
        return deleted

    def _holders(self, waiting: list[Result]) -> tuple[dict[int, list[PodUse]], list[Result]]:
        """The pods holding each waiting row's claim (by row id): one pod LIST per namespace."""
        by_ns: dict[str, list[Result]] = defaultdict(list)
        for r in waiting:
            by_ns[_volume(r.decision).namespace].append(r)
        held: dict[int, list[PodUse]] = {}
        failed: list[Result] = []
        for namespace, group in by_ns.items():
            try:
                users = self._kube.pods_using_claims(namespace, [_volume(r.decision).pvc_name for r in group])
            except Exception as exc:  # one bad namespace never ends the sweep
                detail = str(exc) if isinstance(exc, StagingError) else f"unexpected {type(exc).__name__}: {exc}"
                failed += [Result(r.decision, Outcome.FAILED, detail) for r in group]
                continue
            held.update({_row_id(r): users.get(_volume(r.decision).pvc_name, []) for r in group})
        return held, failed

    def settle(self, pending: list[Result], *, grace: float, touch: Callable[[], None] = _nothing) -> list[Result]:
        """Wait up to ``grace`` seconds for deleted PVCs to disappear and finish those rows. For the
        others: delete the finished pods that hold them (when enabled), wait again, and name the pods
        that still hold them (the pvc-protection finalizer is never stripped)."""
        done, waiting = self._wait_gone(list(pending), grace=grace, touch=touch)
        released: list[Result] = []
        held: list[tuple[Result, list[PodUse]]] = []
        touch()
        holders, failed = self._holders(waiting)
        done += failed
        for r in waiting:
            if _row_id(r) not in holders:
                continue
            touch()
            pods = holders[_row_id(r)]
            try:
                releasable = releasable_holders(pods, finished=self.delete_finished_pods)
                if releasable and self._release_finished_pods(r.decision, pods):
                    released.append(r)
                else:
                    held.append((r, pods))
            except (StagingError, UidMismatch) as exc:
                done.append(Result(r.decision, Outcome.FAILED, str(exc)))
            except Exception as exc:  # one bad item never ends the sweep
                v = _volume(r.decision)
                log.exception("unexpected error settling %s/%s", v.namespace, v.pvc_name)
                done.append(Result(r.decision, Outcome.FAILED, f"unexpected {type(exc).__name__}: {exc}"))
        if released:
            finished, still = self._wait_gone(released, grace=grace, touch=touch)
            done += finished
            holders, failed = self._holders(still)
            done += failed
            held += [(r, holders[_row_id(r)]) for r in still if _row_id(r) in holders]
        by_detail: dict[str, list[Result]] = defaultdict(list)
        for r, pods in held:
            detail = (f"Terminating, held by pod(s) {', '.join(f'{p.name} ({p.phase})' for p in pods[:10])}"
                      if pods else "Terminating, waiting for kube-controller-manager to remove the finalizer")
            by_detail[detail].append(r)
        for detail, group in by_detail.items():  # one statement per distinct detail, not one per row
            try:
                with translate_errors("recording why PVCs are held"), self._engine.begin() as conn:
                    reclaim_batches.set_details(conn, [_row_id(r) for r in group], detail)
                done += [Result(r.decision, Outcome.TERMINATING, detail) for r in group]
            except Exception as exc:  # one bad item never ends the sweep
                done += [Result(r.decision, Outcome.FAILED, f"{type(exc).__name__}: {exc}") for r in group]
        return done


def _volume(d: Decision) -> VolumeRecord:
    assert d.volume is not None
    return d.volume


def _key(r: Result) -> tuple[str, str, str]:
    v = _volume(r.decision)
    return v.namespace, v.pvc_name, v.pvc_uid or ""


def _row_id(d: Decision | Result) -> int:
    return _volume(d.decision if isinstance(d, Result) else d).id
