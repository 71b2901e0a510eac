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
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gc_job.plan import Action, Decision, GcPolicy, finished_holders, reclaim_reason
from gc_job.results import Outcome, Result
from shared.db import runs_repo, volumes_repo
from shared.db.engine import translate_errors
from shared.errors import StagingError
from shared.kube import KubeApi
from shared.kube.api import UidMismatch
from shared.objects import PodUse
from shared.settings import RunsTable
from shared.volumes import DeleteReason, NewVolume, VolumeRecord, VolumeState

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("leoflow_staging.gc")


def _nothing() -> None:
    """The default ``touch``: nothing to keep alive."""
Clock = Callable[[], dt.datetime]


class Executor:
    """Applies decisions; every failure becomes a FAILED result, never an exception."""

    def __init__(self, *, engine: sa.Engine, kube: KubeApi, runs: RunsTable, policy: GcPolicy,
                 clock: Clock, delete_finished_pods: bool = True,
                 on_event: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self._engine, self._kube, self._runs, self._policy, self._clock = engine, kube, runs, policy, clock
        self.lock_runs = True  # share-lock the run's row around the delete (needs UPDATE privilege)
        self.delete_finished_pods = delete_finished_pods
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
                current = reclaim_reason(run, now=self._clock(), policy=self._policy)
                if not isinstance(current, DeleteReason):
                    volumes_repo.abort_reclaim(conn, v.id, detail="run came back before its PVC was deleted")
                    return Result(d, Outcome.ABORTED, "the run came back before the delete; the row is active again")
                if current is not reason:  # e.g. failed -> success: still reclaimable; the audit gives today's reason
                    volumes_repo.set_reason(conn, v.id, current)
                    d = replace(d, reason=current, run_state=run.state if run else None,
                                run_end=run.end_date if run else None)
                if not self._kube.delete_claim(v.namespace, v.pvc_name, uid=v.pvc_uid):
                    return self._finish_in(conn, d, v)
        return Result(d, Outcome.TERMINATING, "delete issued")

    def _finish(self, d: Decision, v: VolumeRecord) -> Result:
        with translate_errors("finishing a reclaim"), self._engine.begin() as conn:
            return self._finish_in(conn, d, v)

    def _finish_in(self, conn: sa.Connection, d: Decision, v: VolumeRecord) -> Result:
        volumes_repo.finish_reclaim(conn, v.id, now=self._clock())
        return Result(d, Outcome.RECLAIMED, "PVC gone; row deleted")

    def _present(self) -> set[tuple[str, str, str]]:
        """(namespace, name, uid) of every PVC of ours: one paginated LIST, not a GET per row."""
        return {(c.namespace, c.name, c.uid) for page in self._kube.list_managed_claims() for c in page}

    def _wait_gone(self, waiting: list[Result], *, grace: float,
                   touch: Callable[[], None] = _nothing) -> tuple[list[Result], list[Result]]:
        """Finish the rows whose PVC disappears within ``grace`` seconds; return (done, still held).
        ``touch`` is called between steps (the sweep keeps its single-flight lock alive with it)."""
        deadline = time.monotonic() + grace
        done: list[Result] = []
        while waiting:
            touch()
            try:
                present = self._present()
            except StagingError as exc:
                return done + [Result(r.decision, Outcome.FAILED, str(exc)) for r in waiting], []
            still = []
            for r in waiting:
                v = r.decision.volume
                assert v is not None
                if (v.namespace, v.pvc_name, v.pvc_uid) in present:
                    still.append(r)
                    continue
                try:
                    done.append(self._finish(r.decision, v))
                except StagingError as exc:
                    done.append(Result(r.decision, Outcome.FAILED, str(exc)))
            waiting = still
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        return done, waiting

    def _release_finished_pods(self, d: Decision, pods: list[PodUse]) -> list[PodUse]:
        """Delete the finished pods that hold a reclaimed claim, under the same run re-check as the
        claim's delete (a clear + re-run in between leaves them alone). Returns the pods deleted."""
        v, reason = d.volume, d.reason
        assert v is not None
        deleted: list[PodUse] = []
        for pod in finished_holders(pods):
            # One short transaction per pod: the run's row is share-locked only around that pod's delete,
            # so a clear waits at most one API call, and no delete ever outlives its guard.
            with translate_errors("deleting a finished pod"), self._engine.begin() as conn:
                run = runs_repo.read_run_locked(conn, self._runs, v.run, lock=self.lock_runs)
                if not isinstance(reclaim_reason(run, now=self._clock(), policy=self._policy), DeleteReason):
                    return deleted  # the run came back: its pods are left alone
                if self._kube.delete_pod(v.namespace, pod.name, uid=pod.uid):
                    deleted.append(pod)
                    self._on_event(logging.INFO, {
                        "event": "finished_pod_deleted", "namespace": v.namespace, "pod": pod.name,
                        "phase": pod.phase, "pvc": v.pvc_name, "dag_id": v.dag_id, "run_id": v.run_id,
                        "reason": reason.value if reason else None,
                        "detail": f"{pod.phase} pod held the reclaimed claim; it can never run again"})
        return deleted

    def settle(self, pending: list[Result], *, grace: float, touch: Callable[[], None] = _nothing) -> list[Result]:
        """Wait up to ``grace`` seconds for deleted PVCs to disappear and finish those rows. For the
        others: delete the finished pods that hold them (when enabled), wait again, and name the pods
        that still hold them (the pvc-protection finalizer is never stripped)."""
        done, waiting = self._wait_gone(list(pending), grace=grace, touch=touch)
        released: list[Result] = []
        held: list[tuple[Result, list[PodUse]]] = []
        for r in waiting:
            touch()
            v = r.decision.volume
            assert v is not None
            try:
                pods = self._kube.pods_using_claim(v.namespace, v.pvc_name)
                if self.delete_finished_pods and self._release_finished_pods(r.decision, pods):
                    released.append(r)
                else:
                    held.append((r, pods))
            except (StagingError, UidMismatch) as exc:
                done.append(Result(r.decision, Outcome.FAILED, str(exc)))
            except Exception as exc:  # one bad item never ends the sweep
                log.exception("unexpected error settling %s/%s", v.namespace, v.pvc_name)
                done.append(Result(r.decision, Outcome.FAILED, f"unexpected {type(exc).__name__}: {exc}"))
        if released:
            finished, still = self._wait_gone(released, grace=grace, touch=touch)
            done += finished
            for r in still:
                v = r.decision.volume
                assert v is not None
                try:
                    held.append((r, self._kube.pods_using_claim(v.namespace, v.pvc_name)))
                except Exception as exc:  # one bad item never ends the sweep
                    done.append(Result(r.decision, Outcome.FAILED, f"{type(exc).__name__}: {exc}"))
        for r, pods in held:
            v = r.decision.volume
            assert v is not None
            try:
                detail = (f"Terminating, held by pod(s) {', '.join(f'{p.name} ({p.phase})' for p in pods[:10])}"
                          if pods else "Terminating, waiting for kube-controller-manager to remove the finalizer")
                with translate_errors("recording why a PVC is held"), self._engine.begin() as conn:
                    volumes_repo.set_detail(conn, v.id, detail)
                done.append(Result(r.decision, Outcome.TERMINATING, detail))
            except Exception as exc:  # one bad item never ends the sweep
                done.append(Result(r.decision, Outcome.FAILED, f"{type(exc).__name__}: {exc}"))
        return done
