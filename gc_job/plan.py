"""GC planning: what to do with each volume, as data (pure; printable with --dry-run)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.holds import describe_hold
from shared.naming import MAX_ID_LEN, id_problem, pvc_name
from shared.objects import ClaimInfo, PodUse
from shared.volumes import DeleteReason, RunId, RunState, VolumeRecord, VolumeState


class Action(StrEnum):
    RECLAIM = "reclaim"  # start (or resume) reclaiming: transition, recheck, delete with uid precondition
    KEEP = "keep"
    HEAL = "heal"  # an active row whose PVC is gone: close it (pvc_missing)
    ADOPT = "adopt"  # a PVC of ours with no live row: record it


@dataclass(frozen=True)
class GcPolicy:
    failed_ttl: dt.timedelta
    success_states: tuple[str, ...]
    failed_states: tuple[str, ...]
    adopt_min_age: dt.timedelta = dt.timedelta(minutes=2)  # also the grace before a row counts as orphaned


@dataclass(frozen=True)
class Decision:
    """One planned step about one volume (or one stray PVC for ADOPT)."""

    action: Action
    namespace: str
    pvc_name: str
    dag_id: str
    run_id: str
    why: str
    reason: DeleteReason | None = None
    volume: VolumeRecord | None = None
    claim: ClaimInfo | None = None
    run_state: str | None = None
    run_end: dt.datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action.value, "namespace": self.namespace, "pvc": self.pvc_name,
            "pvc_uid": self.volume.pvc_uid if self.volume else (self.claim.uid if self.claim else None),
            "dag_id": self.dag_id, "run_id": self.run_id, "reason": self.reason.value if self.reason else None,
            "why": self.why, "run_state": self.run_state,
            "run_end": self.run_end.isoformat() if self.run_end else None,
            "row_id": self.volume.id if self.volume else None,
        }


def _decision(v: VolumeRecord, action: Action, why: str, run: RunState | None,
              reason: DeleteReason | None = None) -> Decision:
    return Decision(action=action, namespace=v.namespace, pvc_name=v.pvc_name, dag_id=v.dag_id, run_id=v.run_id,
                    why=why, reason=reason, volume=v, run_state=run.state if run else None,
                    run_end=run.end_date if run else None)


def reclaim_reason(run: RunState | None, *, now: dt.datetime, policy: GcPolicy) -> DeleteReason | str:
    """The lifecycle rule (contracts 5): a reason to reclaim now, or why the volume is kept."""
    if run is None:
        return DeleteReason.ORPHANED
    if run.state in policy.success_states:
        return DeleteReason.RUN_SUCCEEDED
    if run.state in policy.failed_states:
        if run.end_date is None:
            return "run failed but has no end_date; kept until it has one"
        expires = run.end_date + policy.failed_ttl
        if now >= expires:
            return DeleteReason.TTL_EXPIRED
        return f"run failed at {run.end_date.isoformat()}; kept until {expires.isoformat()}"
    return f"run is {run.state or 'in no state'}"


def operator_verdict(run: RunState | None, *, policy: GcPolicy) -> DeleteReason | str:
    """Whether an operator's ``reclaim`` may free the volume now: only once its run has ended (a success or
    failed state, TTL or not) or is gone from the runs table; never while it is queued, running or cleared."""
    if run is None or run.state in policy.success_states or run.state in policy.failed_states:
        return DeleteReason.OPERATOR_REQUEST
    return f"run is {run.state or 'in no state'}"


def recheck(reason: DeleteReason, run: RunState | None, *, now: dt.datetime, policy: GcPolicy) -> DeleteReason | str:
    """The rule a reclaim started for ``reason`` is re-checked against just before its delete: the operator's
    rule for ``operator_request``, the lifecycle rule otherwise."""
    if reason is DeleteReason.OPERATOR_REQUEST:
        return operator_verdict(run, policy=policy)
    return reclaim_reason(run, now=now, policy=policy)


def decide(volume: VolumeRecord, run: RunState | None, claim_present: bool | None, *, now: dt.datetime,
           policy: GcPolicy) -> Decision:
    """The decision for one live row. ``claim_present`` is None when unknown (not listed)."""
    verdict = reclaim_reason(run, now=now, policy=policy)
    if volume.state is VolumeState.RECLAIMING:
        # Resume: the executor re-checks the run before any delete it has not issued yet.
        reason = volume.delete_reason or (verdict if isinstance(verdict, DeleteReason) else None)
        return _decision(volume, Action.RECLAIM, "resuming an interrupted reclaim", run, reason)
    if claim_present is False:  # gone before the GC deleted anything: the audit says pvc_missing, not a GC reason
        return _decision(volume, Action.HEAL, "the PVC no longer exists", run, DeleteReason.PVC_MISSING)
    if volume.held_until is not None and volume.held(now):  # a person keeps it, whatever the run's state
        return _decision(volume, Action.KEEP,
                         describe_hold(until=volume.held_until, by=volume.held_by, reason=volume.hold_reason), run)
    if verdict is DeleteReason.ORPHANED and now - volume.created_at < policy.adopt_min_age:
        return _decision(volume, Action.KEEP, "its run is not in the runs table (yet); orphan grace", run)
    if isinstance(verdict, DeleteReason):
        return _decision(volume, Action.RECLAIM, f"reclaim: {verdict.value}", run, verdict)
    return _decision(volume, Action.KEEP, verdict, run)


NOT_SERVED = "its namespace is not served by this installation (not labelled for it, or not in its list); left alone"


def plan_batch(volumes: Sequence[VolumeRecord], runs: Mapping[RunId, RunState],
               claims: Mapping[tuple[str, str], str] | None, *, now: dt.datetime,
               policy: GcPolicy, served: Container[str] | None = None) -> list[Decision]:
    """Decisions for a batch of live rows. ``claims`` maps (namespace, name) to uid of our PVCs (listed in the
    ``served`` namespaces only: a row elsewhere is kept untouched, never healed nor reclaimed; None: all)."""
    out = []
    for v in volumes:
        if served is not None and v.namespace not in served:
            out.append(_decision(v, Action.KEEP, NOT_SERVED, runs.get(v.run)))
            continue
        present: bool | None = None
        # A row without a uid cannot be matched: left to the executor; so is a shared-claim directory (the shared
        # claim is not ours, not listed: the executor reads it before it starts).
        if claims is not None and v.pvc_uid and v.shared_claim is None:
            present = claims.get((v.namespace, v.pvc_name)) == v.pvc_uid
            # A row younger than the PVC listing may simply not have been listed yet.
            if not present and now - v.created_at < policy.adopt_min_age:
                present = None
        out.append(decide(v, runs.get(v.run), present, now=now, policy=policy))
    return out


def plan_adoptions(claims: Iterable[ClaimInfo], live: set[tuple[str, str]], *, now: dt.datetime,
                   policy: GcPolicy) -> list[Decision]:
    """PVCs labelled as ours that no live row records (a crash between create and record)."""
    out = []
    for c in claims:
        if (c.namespace, c.name) in live or c.terminating or c.shared:  # a shared claim holds every run's directory
            continue
        if c.created_at is not None and now - c.created_at < policy.adopt_min_age:
            continue  # probably an admission in flight: its row is about to be written
        if not c.dag_id or not c.run_id:
            out.append(Decision(action=Action.KEEP, namespace=c.namespace, pvc_name=c.name, dag_id=c.dag_id or "",
                                run_id=c.run_id or "", claim=c,
                                why="labelled as ours but lacks the identity annotations; left alone"))
            continue
        problems = [f"its {key} annotation {p}" for key, value in (("dag_id", c.dag_id), ("run_id", c.run_id))
                    if (p := id_problem(value))]
        if not problems and c.name != pvc_name(c.dag_id, c.run_id):
            problems.append(f"its name is not the one admission gives that run ({pvc_name(c.dag_id, c.run_id)})")
        if problems:  # admission would never have created it: not ours to record, never ours to delete
            out.append(Decision(action=Action.KEEP, namespace=c.namespace, pvc_name=c.name,
                                dag_id=c.dag_id[:MAX_ID_LEN], run_id=c.run_id[:MAX_ID_LEN], claim=c,
                                why=f"labelled as ours but {' and '.join(problems)}, so it cannot be recorded; "
                                    "left alone"))
            continue
        out.append(Decision(action=Action.ADOPT, namespace=c.namespace, pvc_name=c.name, dag_id=c.dag_id,
                            run_id=c.run_id, claim=c, why="PVC of ours without a live row"))
    return out


def releasable_holders(pods: Iterable[PodUse], *, finished: bool) -> list[PodUse]:
    """The pods holding a reclaimed claim that may be deleted: the inspect pods (they only read the files, which
    are being reclaimed) and, when ``finished``, those that can never run again. Never a task pod that runs."""
    return [p for p in pods if p.inspect or (finished and p.finished)]
