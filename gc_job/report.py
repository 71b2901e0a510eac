"""From results to what the on-call reads: one JSON line per reclaim, a summary per sweep (pure)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from gc_job.plan import Decision
from gc_job.results import Outcome, Result


def _seconds(delta: dt.timedelta | None) -> float | None:
    return round(delta.total_seconds(), 1) if delta is not None else None


def event_fields(result: Result, *, now: dt.datetime) -> dict[str, Any]:
    """The fields of one result's log line (namespace, pvc, ids, reason, run end, age)."""
    d = result.decision
    v = d.volume
    return {
        "event": result.outcome.value,
        "namespace": d.namespace,
        "pvc": d.pvc_name,
        "pvc_uid": v.pvc_uid if v else (d.claim.uid if d.claim else None),
        "dag_id": d.dag_id,
        "run_id": d.run_id,
        "reason": d.reason.value if d.reason else None,
        "run_state": d.run_state,
        "run_end": d.run_end.isoformat() if d.run_end else None,
        "since_run_end_s": _seconds(now - d.run_end) if d.run_end else None,
        "age_s": _seconds(now - v.created_at) if v else None,
        "detail": result.detail or d.why,
        **({"bytes_freed": result.bytes_freed} if result.bytes_freed is not None else {}),
        **({"shared_claim": v.shared_claim} if v is not None and v.shared_claim else {}),
    }


def planned_fields(decision: Decision) -> dict[str, Any]:
    return {"event": "planned", **decision.as_dict()}


LOGGED = {Outcome.RECLAIMED, Outcome.TERMINATING, Outcome.CLEANING, Outcome.ABORTED, Outcome.HEALED,
          Outcome.ADOPTED, Outcome.FAILED}


def summary(results: Sequence[Result], *, kept: int, duration: float, dry_run: bool,
            pruned: int = 0) -> dict[str, Any]:
    """The sweep's closing line: counts by reason, kept, failed, audit rows pruned, duration."""
    reclaimed = Counter(r.decision.reason.value for r in results
                        if r.outcome is Outcome.RECLAIMED and r.decision.reason)
    outcomes = Counter(r.outcome.value for r in results)
    planned = Counter(f"{r.decision.action.value}:{r.decision.reason.value}" if r.decision.reason
                      else r.decision.action.value for r in results if r.outcome is Outcome.PLANNED)
    out: dict[str, Any] = {
        "event": "sweep_summary",
        "dry_run": dry_run,
        "reclaimed": dict(reclaimed),
        "reclaimed_total": sum(reclaimed.values()),
        "kept": kept + outcomes.get("kept", 0),
        "terminating": outcomes.get("terminating", 0),
        "cleaning": outcomes.get("cleaning", 0),
        "aborted": outcomes.get("aborted", 0),
        "adopted": outcomes.get("adopted", 0),
        "healed": outcomes.get("healed", 0),
        "failed": outcomes.get("failed", 0),
        "pruned": pruned,
        "duration_s": round(duration, 3),
    }
    if dry_run:
        out["planned"] = dict(planned)
    return out


def exit_code(results: Sequence[Result]) -> int:
    """0 when every planned action succeeded; 1 when any failed (after all were attempted)."""
    return 1 if any(r.failed for r in results) else 0
