"""What a staging PVC's Kubernetes Events say (pure): created for run X by pod Y, reclaim started
with its reason, held by pods, kept because the run failed at T.

Each event has a deterministic name per (claim, fact): telling the same fact twice is a 409 the
recorder ignores, so a kept volume is not re-announced every sweep (only after the apiserver's event
TTL has dropped the old one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

CONTROLLER = "leoflow-staging"  # reportingController
NOTE_MAX = 1000  # events.k8s.io/v1 notes are at most 1 kB


@dataclass(frozen=True)
class ClaimEvent:
    namespace: str
    pvc_name: str
    reason: str  # CamelCase, what happened
    action: str  # what we did
    note: str
    key: str  # the fact, for the event's deterministic name
    type: str = "Normal"
    pvc_uid: str | None = None

    @property
    def name(self) -> str:
        digest = hashlib.sha256(f"{self.reason}\0{self.key}".encode()).hexdigest()[:12]
        return f"{self.pvc_name}.{digest}"


def created(*, namespace: str, pvc_name: str, pvc_uid: str, dag_id: str, run_id: str, pod: str,
            storage_class: str, size: str) -> ClaimEvent:
    return ClaimEvent(namespace, pvc_name, "StagingVolumeCreated", "Create",
                      _note(f"created for run {run_id!r} of DAG {dag_id!r} by pod {pod} ({size}, class "
                            f"{storage_class}); reclaimed by the GC once the run is over"),
                      key=pvc_uid, pvc_uid=pvc_uid)


def still_pending(*, namespace: str, pvc_name: str, pvc_uid: str, storage_class: str, provisioner: str,
                  seconds: float, said: str | None) -> ClaimEvent:
    """A claim still Pending long after its creation, with the provisioner's last word (its own Events)."""
    heard = (f"the provisioner's last event: {said}" if said else
             "no event from a provisioner yet (is one running for this class?)")
    return ClaimEvent(namespace, pvc_name, "ProvisioningSlow", "Wait",
                      _note(f"still Pending {seconds:.0f}s after its creation; class {storage_class} (provisioner "
                            f"{provisioner}); {heard}"),
                      key=pvc_uid, type="Warning", pvc_uid=pvc_uid)


_WHY = {
    "run_succeeded": "the run had succeeded",
    "ttl_expired": "the failed run's TTL had passed",
    "orphaned": "the run was gone from the runs table",
    "pvc_missing": "the claim had been deleted outside leoflow-staging",
    "operator_request": "an operator reclaimed it (leoflow-staging reclaim)",
}


def started_empty(*, namespace: str, pvc_name: str, pvc_uid: str, dag_id: str, run_id: str, pod: str,
                  deleted_at: str | None, reason: str | None) -> ClaimEvent:
    """A run starts over on a new, empty claim: its previous volume was reclaimed (the pod's upstream inputs are
    gone). The admission's warning says it in 120 characters; this says it at length."""
    why = _WHY.get(reason or "", reason or "unknown reason")
    return ClaimEvent(namespace, pvc_name, "PreviousVolumeReclaimed", "Create",
                      _note(f"run {run_id!r} of DAG {dag_id!r} had a staging volume before: it was reclaimed at "
                            f"{deleted_at or 'an unknown time'} ({reason or 'no reason recorded'}: {why}). This "
                            f"claim, created for pod {pod}, is new and empty: every file the run's earlier tasks "
                            "wrote is gone, so a task that reads them will fail. Clear the whole run (every task, "
                            "upstream ones included), not only the failed tasks."),
                      key=f"{pvc_uid}\0started_empty", type="Warning", pvc_uid=pvc_uid)


def from_gc(fields: dict[str, Any]) -> list[ClaimEvent]:
    """The events a GC log line stands for (none for most lines), with the claim's uid when the line has it
    (then the recorder need not read the claim to learn it)."""
    event, namespace, pvc = fields.get("event"), fields.get("namespace"), fields.get("pvc")
    if not isinstance(namespace, str) or not isinstance(pvc, str):
        return []
    shared = fields.get("shared_claim")
    if isinstance(shared, str) and shared:  # a run's directory: the events go on the shared claim, naming it
        events = [replace(e, note=_note(f"directory {pvc}: {e.note}"))
                  for e in _from_gc(fields, event, namespace, shared)]
    else:
        events = _from_gc(fields, event, namespace, pvc)
    return [replace(e, pvc_uid=uid) if isinstance(uid := fields.get("pvc_uid"), str) and uid else e
            for e in events]


def _from_gc(fields: dict[str, Any], event: Any, namespace: str, pvc: str) -> list[ClaimEvent]:
    run = f"run {fields.get('run_id')!r} of DAG {fields.get('dag_id')!r}"
    reason = fields.get("reason")
    run_key = f"{fields.get('dag_id')}\0{fields.get('run_id')}"
    if event == "kept_failed_run":
        return [ClaimEvent(namespace, pvc, "KeptFailedRun", "Keep",
                           _note(f"kept because {run} failed at {fields.get('run_end')}: {fields.get('why')}"),
                           key=f"{run_key}\0{fields.get('run_end')}")]
    if event in ("terminating", "reclaimed"):
        out = [ClaimEvent(namespace, pvc, "ReclaimStarted", "Reclaim",
                          _note(f"reclaim started, reason {reason} ({run}, state {fields.get('run_state')})"),
                          key=f"{run_key}\0{reason}")]
        detail = str(fields.get("detail") or "")
        if event == "terminating" and "held by pod" in detail:
            out.append(ClaimEvent(namespace, pvc, "ReclaimHeld", "Wait", _note(f"{detail}; the claim goes once "
                                  "they are gone (finished pods are deleted by the GC when enabled)"),
                                  key=f"{run_key}\0{detail}", type="Warning"))
        return out
    if event == "aborted":
        return [ClaimEvent(namespace, pvc, "ReclaimAborted", "Keep",
                           _note(f"reclaim aborted: {run} came back before its claim was deleted"),
                           key=f"{run_key}\0aborted\0{fields.get('run_state')}")]
    if event == "finished_pod_deleted":
        return [ClaimEvent(namespace, pvc, "FinishedPodDeleted", "Delete",
                           _note(f"deleted {fields.get('phase')} pod {fields.get('pod')} that held the claim"),
                           key=f"{run_key}\0{fields.get('pod')}")]
    return []


def gc_events(emit: Callable[[ClaimEvent], None]) -> Callable[[dict[str, Any]], None]:
    """A GC log-line hook that emits the events each line stands for."""
    def on_line(fields: dict[str, Any]) -> None:
        for event in from_gc(fields):
            emit(event)
    return on_line


def _note(text: str) -> str:
    return text if len(text) <= NOTE_MAX else text[:NOTE_MAX - 3] + "..."


def manifest(event: ClaimEvent, *, instance: str, now_iso: str) -> dict[str, Any]:
    """The events.k8s.io/v1 Event object (``now_iso``: RFC 3339 with microseconds, UTC)."""
    regarding: dict[str, Any] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                 "namespace": event.namespace, "name": event.pvc_name}
    if event.pvc_uid:
        regarding["uid"] = event.pvc_uid
    return {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": event.name, "namespace": event.namespace,
                     "labels": {"app.kubernetes.io/managed-by": CONTROLLER}},
        "eventTime": now_iso, "reportingController": CONTROLLER, "reportingInstance": instance[:128],
        "action": event.action, "reason": event.reason, "type": event.type, "note": event.note,
        "regarding": regarding,
    }
