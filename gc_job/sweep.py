"""One GC sweep: single flight, adopt strays, plan in batches, act, settle, report."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from gc_job import health, report
from gc_job.directory_reclaim import DirectoryReclaimer
from gc_job.executor import Executor, batchable
from gc_job.plan import Action, Decision, GcPolicy, plan_adoptions, plan_batch
from gc_job.results import Outcome, Result
from shared.db import audit_prune, runs_repo, volumes_repo
from shared.db.engine import translate_errors
from shared.db.locks import DEFAULT_IDLE_TIMEOUT, GcLock, single_flight
from shared.errors import LockLost, StagingError
from shared.kube import KubeApi
from shared.kube.deletions import DeletionWatch
from shared.namespaces import Served, served_namespaces
from shared.objects import ClaimInfo, claim_key
from shared.settings import RunsTable

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("leoflow_staging.gc")
Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class SweepConfig:
    runs: RunsTable
    policy: GcPolicy
    batch_size: int = 500
    settle_seconds: float = 10.0
    parallelism: int = 8  # Kubernetes calls in flight at once (the PVC deletes of a batch, or single actions)
    delete_finished_pods: bool = True  # Succeeded/Failed pods holding a reclaimed claim are deleted
    # A sweep that makes no progress (no touch of its lock) for this long loses the lock to the next one.
    lock_idle_seconds: float = DEFAULT_IDLE_TIMEOUT
    # Deleted rows older than this are pruned at the end of each sweep (0: never).
    audit_retention: dt.timedelta = dt.timedelta(days=90)


class Sweeper:
    """Runs sweeps against one database and one cluster."""

    def __init__(self, *, engine: sa.Engine, kube: KubeApi, config: SweepConfig, clock: Clock = _utcnow,
                 out: IO[str] | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
                 directories: DirectoryReclaimer | None = None) -> None:
        self._engine, self._kube, self._config, self._clock = engine, kube, config, clock
        self._on_event = on_event  # e.g. Kubernetes Events (shared.claim_events.from_gc)
        self._out = out or sys.stdout
        self._executor = Executor(engine=engine, kube=kube, runs=config.runs, policy=config.policy, clock=clock,
                                  delete_finished_pods=config.delete_finished_pods, on_event=self._emit)
        self._executor.directories = directories  # the shared-claim mode's cleanup pods
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.parallelism,
                                                           thread_name_prefix="gc-act")
        self._batcher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gc-batch")
        self._lock: GcLock | None = None
        self._listed_version: list[str] = []  # the resourceVersion of the sweep's listing (one per namespace)
        self._served = Served(namespaces=frozenset())  # the namespaces this sweep acts in

    def _touch(self) -> None:
        """Progress: keep the single-flight lock (raises ``LockLost`` when it is gone)."""
        if self._lock is not None:
            self._lock.touch()

    def _emit(self, level: int, fields: dict[str, Any]) -> None:
        log.log(level, fields.get("event", ""), extra={"fields": fields})
        if self._on_event is not None:
            self._on_event(fields)

    def _touch_now(self) -> None:
        """Before a batched transition or a batch of deletes: check the lock now (not rate-limited), so a
        sweep that lost its lock starts nothing more (raises ``LockLost``)."""
        if self._lock is not None:
            self._lock.touch(force=True)

    def _namespaces(self) -> Served:
        """The namespaces this sweep acts in: those labelled for the installation (and in its list, if any);
        a listed namespace without the label is reported, never acted in."""
        served = served_namespaces(self._kube.labelled_namespaces(), self._kube.namespaces)
        if served.unlabelled:
            self._emit(logging.WARNING, {
                "event": "namespaces_not_labelled", "namespaces": list(served.unlabelled),
                "detail": f"listed but not labelled leoflow.io/staging-instance={self._kube.instance}: not served "
                          "(label them: kubectl label namespace NAME leoflow.io/staging-instance=INSTANCE)"})
        return served

    def _claims(self) -> dict[tuple[str, str], str]:
        """(namespace, name) -> uid of every PVC of ours in the served namespaces: only what the healing checks
        need is kept of the listing (no whole objects: the peak memory at 100k PVCs is that of the names and
        uids)."""
        index: dict[tuple[str, str], str] = {}
        served = self._served
        for page in self._kube.list_managed(claim_key, on_version=self._listed_version.append):
            for namespace, name, uid in page:
                if namespace in served:
                    index[namespace, name] = uid
            self._touch()
        return index

    def _strays(self, index: dict[tuple[str, str], str]) -> tuple[list[ClaimInfo], list[Result]]:
        """The listed PVCs without a live row, read again whole (they are few: a crash between create and
        record); a chunk of names at a time against the table, so no set of every live name is held."""
        keys = list(index)
        strays: list[ClaimInfo] = []
        failed: list[Result] = []
        chunk = 500
        for first in range(0, len(keys), chunk):
            part = keys[first:first + chunk]
            with translate_errors("reading staging_volumes"), self._engine.connect() as conn:
                live = volumes_repo.live_names(conn, part, chunk=chunk)
            self._touch()
            for namespace, name in part:
                if (namespace, name) in live:
                    continue
                try:
                    claim = self._kube.read_claim(namespace, name)
                except StagingError as exc:
                    failed.append(Result(Decision(action=Action.ADOPT, namespace=namespace, pvc_name=name,
                                                  dag_id="", run_id="", why="PVC of ours without a live row"),
                                         Outcome.FAILED, str(exc)))
                    continue
                if claim is not None and claim.uid == index[namespace, name] and claim.instance == \
                        self._kube.instance and claim.managed:
                    strays.append(claim)
        return strays, failed

    def check_runs_table(self) -> None:
        """Fail early, with the table's name, when the runs table cannot be read; learn whether
        the run's row can be share-locked around each delete."""
        with translate_errors("reading the runs table"), self._engine.connect() as conn:
            runs_repo.check_readable(conn, self._config.runs)
            self._executor.lock_runs = runs_repo.can_lock_runs(conn, self._config.runs)

    def run(self, *, dry_run: bool = False) -> int:
        started, started_at = time.monotonic(), self._clock()
        with translate_errors("taking the GC lock"), \
                single_flight(self._engine, idle_timeout=self._config.lock_idle_seconds) as acquired:
            if not acquired:
                self._emit(logging.INFO, {"event": "sweep_skipped",
                                          "detail": "another GC sweep holds the lock; nothing to do"})
                if not dry_run:  # an operator's --dry-run during a sweep is no skipped sweep to alert on
                    health.record(self._engine, health.skipped(started_at=started_at, finished_at=self._clock(),
                                                               duration=time.monotonic() - started))
                return 0
            self.check_runs_table()
            if not self._executor.lock_runs:
                self._emit(logging.WARNING, {
                    "event": "runs_table_not_lockable",
                    "detail": f"this role lacks UPDATE on {self._config.runs.table}, so the run is re-checked "
                              "just before each delete without a share lock (a clear in that instant is not "
                              "blocked); GRANT UPDATE to close the window (nothing is ever written)"})
            self._lock = acquired
            try:
                results, kept = self._sweep(dry_run=dry_run)
                pruned = 0 if dry_run else self._prune(started_at)
            except LockLost as lost:  # the server ended the lock's session: another sweep may run now
                self._emit(logging.ERROR, {"event": "lock_lost", "detail": str(lost)})
                raise
            finally:
                self._lock = None
        fields = report.summary(results, kept=kept, duration=time.monotonic() - started, dry_run=dry_run,
                                pruned=pruned)
        self._emit(logging.INFO, fields)
        if not dry_run:
            health.record(self._engine, health.completed(fields, started_at=started_at, finished_at=self._clock()))
        return report.exit_code(results)

    def _prune(self, now: dt.datetime) -> int:
        """The audit retention: delete rows deleted before ``now - audit_retention`` in bounded batches, keeping
        the lock alive between them; returns how many went (a failure is logged, the sweep's result stands)."""
        retention = self._config.audit_retention
        if retention <= dt.timedelta(0):
            return 0
        cutoff = now - retention
        try:
            pruned = audit_prune.prune_deleted(self._engine, cutoff=cutoff, between=self._touch)
        except LockLost:
            raise
        except StagingError as exc:
            self._emit(logging.WARNING, {"event": "audit_prune_failed", "cutoff": cutoff.isoformat(),
                                         "detail": str(exc)})
            return 0
        if pruned:
            self._emit(logging.INFO, {"event": "audit_pruned", "pruned": pruned, "cutoff": cutoff.isoformat(),
                                      "detail": f"deleted {pruned} audit row(s) of volumes deleted before the "
                                                f"retention ({retention})"})
        return pruned

    def _sweep(self, *, dry_run: bool) -> tuple[list[Result], int]:
        """Results of every action taken (kept rows are only counted: memory stays bounded)."""
        now = self._clock()
        self._listed_version = []
        self._served = self._namespaces()
        index = self._claims()
        if not dry_run and self._listed_version:  # settling reads deletions from a watch, not from re-listing
            # The first listing's version: a watch from it sees every deletion after each namespace's listing.
            self._executor.deletions = DeletionWatch(self._kube, self._listed_version[0]).start()
        try:
            return self._act(index, now=now, dry_run=dry_run)
        finally:
            if self._executor.deletions is not None:
                self._executor.deletions.stop()
                self._executor.deletions = None

    def _act(self, index: dict[tuple[str, str], str], *, now: dt.datetime, dry_run: bool) -> tuple[list[Result], int]:
        policy = self._config.policy
        # Every listed claim counts as present, Terminating ones too: a claim someone else deleted but a pod
        # still holds is not "missing" (adoption skips Terminating claims on its own).
        strays, results = self._strays(index)
        for r in results:
            self._report_each([r])
        kept = 0
        for d in plan_adoptions(strays, set(), now=now, policy=policy):
            if d.action is Action.KEEP:
                kept += 1
                self._emit(logging.WARNING, {"event": "stray_pvc", "namespace": d.namespace, "pvc": d.pvc_name,
                                             "detail": d.why})
                continue
            results.append(self._do(d, dry_run))
            self._touch()
        pending: list[Result] = []
        # A batch's fresh reclaims run on the batch thread while the next batch is read and planned; at most
        # one batch is in flight (``collect`` waits for it before the next is submitted).
        in_flight: concurrent.futures.Future[list[Result]] | None = None

        def collect() -> None:
            nonlocal in_flight
            if in_flight is None:
                return
            done, in_flight = in_flight, None
            for r in done.result():  # re-raises the batch's LockLost: the sweep stops
                if r.outcome is Outcome.TERMINATING:
                    pending.append(r)
                else:
                    results.append(r)
                    self._report_each([r])

        def submit(batched: list[Decision]) -> None:
            nonlocal in_flight
            in_flight = self._batcher.submit(self._executor.reclaim_batch, batched, touch=self._touch_now,
                                             parallel=self._pool.map)

        try:
            kept += self._plan_and_act(index, now=now, dry_run=dry_run, results=results, pending=pending,
                                       collect=collect, submit=submit)
        finally:
            if in_flight is not None:  # no delete outlives the sweep (nor its lock), even on an error
                concurrent.futures.wait([in_flight])
        collect()
        if pending:
            self._touch()
            results.extend(self._report_each(self._executor.settle(pending, grace=self._config.settle_seconds,
                                                                   touch=self._touch)))
        return results, kept

    def _plan_and_act(self, index: dict[tuple[str, str], str], *, now: dt.datetime, dry_run: bool,
                      results: list[Result], pending: list[Result], collect: Callable[[], None],
                      submit: Callable[[list[Decision]], None]) -> int:
        """Read the live rows a batch at a time, plan and act; returns how many were kept."""
        policy, kept = self._config.policy, 0
        with translate_errors("reading staging_volumes"), self._engine.connect() as conn:
            batches = volumes_repo.iter_live(conn, batch_size=self._config.batch_size)
            for batch in batches:
                self._touch()
                runs = runs_repo.run_states(conn, self._config.runs, (v.run for v in batch))
                actions = []
                for d in plan_batch(batch, runs, index, now=now, policy=policy, served=self._served):
                    if d.action is Action.KEEP:
                        kept += 1
                        v = d.volume
                        if v is not None and v.held_until is not None and v.held(now):
                            # kept by a person's hold: the on-call sees until when, by whom and why
                            self._emit(logging.INFO, {"event": "kept_held", **d.as_dict(),
                                                      "held_until": v.held_until.isoformat(),
                                                      "held_by": v.held_by, "hold_reason": v.hold_reason})
                            continue
                        if d.run_state in self._config.policy.failed_states:
                            if d.run_end is None:
                                self._emit(logging.WARNING, {"event": "kept_without_end_date", **d.as_dict()})
                            else:  # the on-call sees why a failed run's disk is still claimed, and until when
                                self._emit(logging.INFO, {"event": "kept_failed_run", **d.as_dict()})
                        continue
                    actions.append(d)
                conn.rollback()  # end the read transaction between batches
                # Fresh reclaims go together: one guarded transition for the batch, deletes in parallel.
                batched = [] if dry_run else [d for d in actions if batchable(d)]
                # The rest (resumes, heals, adoptions) one by one, each guarding itself, in parallel.
                single = [d for d in actions if dry_run or not batchable(d)]
                for r in self._pool.map(lambda d: self._do(d, dry_run), single):
                    (pending if r.outcome is Outcome.TERMINATING else results).append(r)
                    self._touch()
                collect()  # the previous batch's reclaims
                if batched:
                    submit(batched)
                self._touch()
        return kept

    def _do(self, d: Decision, dry_run: bool) -> Result:
        if dry_run:
            self._out.write(json.dumps(report.planned_fields(d)) + "\n")  # one write: whole lines from threads
            return Result(d, Outcome.PLANNED, d.why)
        result = self._executor.apply(d)
        if result.outcome is not Outcome.TERMINATING:
            self._report_each([result])
        return result

    def _report_each(self, results: list[Result]) -> list[Result]:
        now = self._clock()
        for r in results:
            if r.outcome in report.LOGGED:
                level = logging.ERROR if r.failed else logging.INFO
                self._emit(level, report.event_fields(r, now=now))
        return results
