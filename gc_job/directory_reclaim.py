"""Reclaiming a run's directory on a shared claim (the shared-claim mode's step 2 and 3 of a reclaim).

The same protocol as a claim's (gc_job.executor): ``active -> reclaiming`` under the run's guard, then, in one
transaction holding a share lock on the run's row, the run re-checked and the removal started: here a cleanup pod
(gc_job.cleanup_pod) instead of a PVC delete. Then:
  - before the first cleanup pod, the directory's pods (labelled at admission) must all have finished: a task
    still running keeps its files (the row stays ``reclaiming``: new pods of the run are refused, retriably);
  - once a cleanup pod exists, the run is not re-checked again (the directory may already be renamed away), and
    a failed or killed pod is followed by the next attempt (the cleanup resumes where it stopped);
  - a pod that *refused* (the marker is missing or names another run) removed nothing: the row stays
    ``reclaiming`` and every sweep reports it until a person looks;
  - the directory gone: ``reclaiming -> deleted`` with the bytes it held, and the row's cleanup pods deleted.
A sweep waits ``wait`` seconds for a cleanup pod; a longer one is picked up by the next sweep.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gc_job import cleanup_pod
from gc_job.cleanup_pod import State
from gc_job.plan import Action, Decision, GcPolicy, recheck
from gc_job.results import Outcome, Result
from shared import labels
from shared.db import runs_repo, volumes_repo
from shared.db.engine import translate_errors
from shared.kube import KubeApi
from shared.kube.cleanup_api import CleanupKubeApi
from shared.settings import RunsTable, Settings
from shared.volumes import DeleteReason, VolumeRecord, VolumeState

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("leoflow_staging.gc")
MAX_ATTEMPTS = 5  # cleanup pods per row before the GC stops starting new ones (each failed one is kept)
FINISHED = ("Succeeded", "Failed")


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _attempt(pod: dict[str, Any]) -> int:
    name = str((pod.get("metadata") or {}).get("name") or "")
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class DirectoryReclaimer:
    def __init__(self, *, engine: sa.Engine, kube: KubeApi, pods: CleanupKubeApi, runs: RunsTable,
                 policy: GcPolicy, clock: Callable[[], dt.datetime], image: str, wait: float,
                 lock_runs: bool = True, poll: float = 1.0, resources: dict[str, Any] | None = None) -> None:
        self._engine, self._kube, self._pods, self._runs = engine, kube, pods, runs
        self._policy, self._clock, self._image = policy, clock, image
        self._wait, self._poll = wait, poll
        self._resources = resources  # of the cleanup pods (None: cleanup_pod.RESOURCES)
        self.on_event: Callable[[int, dict[str, Any]], None] = lambda level, fields: log.log(
            level, fields.get("event", ""), extra={"fields": fields})
        self.lock_runs = lock_runs

    def reclaim(self, d: Decision, reason: DeleteReason) -> Result:
        v = d.volume
        assert v is not None and v.shared_claim is not None
        if v.state is VolumeState.ACTIVE:
            claim = self._kube.read_claim(v.namespace, v.shared_claim)
            if claim is None or claim.uid != v.pvc_uid:  # its directories went with it
                with translate_errors("closing a row whose shared claim is gone"), self._engine.begin() as conn:
                    volumes_repo.close_missing(conn, v.id, now=self._clock(),
                                               detail=f"shared claim {v.shared_claim} not found by the GC")
                return Result(_healed(d), Outcome.HEALED, "row closed: its shared claim no longer exists")
            condition = runs_repo.reclaimable_condition(self._runs, reason, now=self._clock(),
                                                        failed_ttl=self._policy.failed_ttl)
            with translate_errors("starting a reclaim"), self._engine.begin() as conn:
                if not volumes_repo.begin_reclaim(conn, v.id, reason=reason, now=self._clock(),
                                                  still_reclaimable=condition):
                    return Result(d, Outcome.KEPT, "the run changed since planning; kept")
        pods = self._pods.cleanup_pods(v.namespace, v.id)
        if not pods:
            users = self._pods.directory_users(v.namespace, v.pvc_name)
            self._release_inspect_pods(v, reason, [p for p in users if _labels(p).get(labels.INSPECT) == "true"])
            busy = [p for p in users if (p.get("status") or {}).get("phase") not in FINISHED
                    and _labels(p).get(labels.INSPECT) != "true"]
            if busy:
                names = ", ".join(sorted(str((p.get("metadata") or {}).get("name")) for p in busy)[:5])
                return Result(d, Outcome.CLEANING, f"waiting: pod(s) {names} still use the directory")
            started = self._start(d, v, reason)
            if isinstance(started, Result):
                return started
            d = started
        return self._follow(d, v)

    def _release_inspect_pods(self, v: VolumeRecord, reason: DeleteReason, pods: list[dict[str, Any]]) -> None:
        """An inspect pod only reads the files that are going: deleted (uid precondition), never waited for."""
        for p in pods:
            meta = p.get("metadata") or {}
            self._pods.delete_pod(v.namespace, str(meta.get("name")), uid=str(meta.get("uid")))
            self.on_event(logging.INFO, {
                "event": "inspect_pod_deleted", "namespace": v.namespace, "pod": meta.get("name"),
                "phase": (p.get("status") or {}).get("phase"), "pvc": v.pvc_name, "dag_id": v.dag_id,
                "run_id": v.run_id, "reason": reason.value,
                "detail": "an inspect pod used the directory being removed (it only reads the files)"})

    def _start(self, d: Decision, v: VolumeRecord, reason: DeleteReason) -> Decision | Result:
        """The run re-checked under its share lock, and the first cleanup pod created in that transaction."""
        with translate_errors("starting a directory's cleanup"), self._engine.begin() as conn:
            run = runs_repo.read_run_locked(conn, self._runs, v.run, lock=self.lock_runs)
            current = recheck(reason, run, now=self._clock(), policy=self._policy)
            if not isinstance(current, DeleteReason):
                volumes_repo.abort_reclaim(conn, v.id, detail="run came back before its directory was removed")
                return Result(d, Outcome.ABORTED, "the run came back before the cleanup; the row is active again")
            if current is not reason:
                volumes_repo.set_reason(conn, v.id, current)
                d = replace(d, reason=current, run_state=run.state if run else None,
                            run_end=run.end_date if run else None)
            self._pods.create_pod(cleanup_pod.manifest(v, image=self._image, instance=self._pods.instance,
                                                       attempt=0, resources=self._resources))
        return d

    def _follow(self, d: Decision, v: VolumeRecord) -> Result:
        """Wait for the newest cleanup pod (starting the next attempt after a failed one) up to ``wait`` s."""
        deadline = time.monotonic() + self._wait
        while True:
            pods = self._pods.cleanup_pods(v.namespace, v.id)
            if not pods:  # deleted by someone meanwhile: the next sweep starts again (the run is not re-checked)
                attempts = 0
                status = cleanup_pod.Status(State.FAILED, "the cleanup pod disappeared")
            else:
                attempts = max(_attempt(p) for p in pods) + 1
                newest = max(pods, key=_attempt)
                status = cleanup_pod.status_of(newest)
            if status.state is State.REMOVED:
                with translate_errors("finishing a reclaim"), self._engine.begin() as conn:
                    volumes_repo.finish_reclaim(conn, v.id, now=self._clock(), bytes_freed=status.bytes)
                for p in pods:
                    meta = p.get("metadata") or {}
                    self._pods.delete_pod(v.namespace, str(meta.get("name")), uid=str(meta.get("uid")))
                return Result(d, Outcome.RECLAIMED, f"{status.detail}; {status.bytes} bytes in {status.files} "
                              "files freed; row deleted", bytes_freed=status.bytes)
            if status.state is State.REFUSED:
                return Result(d, Outcome.FAILED, f"{status.detail}; nothing was removed, the row stays reclaiming "
                              "until a person looks (kubectl logs / describe the cleanup pod)")
            if status.state is State.FAILED:
                if attempts >= MAX_ATTEMPTS:
                    return Result(d, Outcome.FAILED, f"{status.detail}; {attempts} cleanup pods failed, no more "
                                  "are started: delete them to let the GC try again")
                self._pods.create_pod(cleanup_pod.manifest(v, image=self._image, instance=self._pods.instance,
                                                           attempt=attempts, resources=self._resources))
            if time.monotonic() >= deadline:
                return Result(d, Outcome.CLEANING, f"{status.detail}; the next sweep picks it up")
            time.sleep(self._poll)


def from_settings(settings: Settings, *, engine: sa.Engine, kube: KubeApi, policy: GcPolicy,
                  clock: Callable[[], dt.datetime], pool_size: int) -> DirectoryReclaimer | None:
    """The reclaimer the GC and `leoflow-staging reclaim` use, as the settings say (None without the image)."""
    if not settings.image:
        return None
    from shared.kube import make_api_client  # noqa: PLC0415 - the client only where a reclaimer is built

    return DirectoryReclaimer(
        engine=engine, kube=kube, runs=settings.runs, policy=policy, clock=clock, image=settings.image,
        wait=settings.cleanup_wait,
        resources=json.loads(settings.cleanup_resources) if settings.cleanup_resources else None,
        pods=CleanupKubeApi(make_api_client(settings.kubeconfig, pool_size=pool_size),
                            timeout=max(settings.kube_timeout, 5.0), instance=settings.instance))


def _healed(d: Decision) -> Decision:
    return replace(d, action=Action.HEAL, reason=DeleteReason.PVC_MISSING, why="the shared claim no longer exists")
