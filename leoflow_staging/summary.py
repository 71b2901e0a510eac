"""`leoflow-staging volumes --summary`: the numbers /metrics exports, for a person."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from shared.db.engine import make_engine
from shared.db.inventory import Snapshot, load_snapshot
from shared.quantity import format_bytes
from shared.settings import Settings
from shared.sweeps import OUTCOMES


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def as_dict(snap: Snapshot) -> dict[str, Any]:
    """The summary as data (``--json``), with the metrics' names and units."""
    inv, gc = snap.inventory, snap.gc
    last = gc.last_success
    return {
        "read_at": inv.read_at.isoformat(),
        "volumes": inv.volumes_by_state(),
        "volumes_by_namespace_class": [
            {"state": g.state, "namespace": g.namespace, "storage_class": g.storage_class, "count": g.count,
             "requested_bytes": g.requested_bytes} for g in inv.groups],
        "requested_bytes": sum(g.requested_bytes for g in inv.groups),
        "failed_kept_volumes": inv.failed_kept,
        "oldest_failed_kept_seconds": inv.oldest_failed_kept_seconds(),
        "oldest_reclaiming_seconds": inv.oldest_reclaiming_seconds(),
        "held_volumes": inv.held,
        "oldest_hold_seconds": inv.oldest_hold_seconds(),
        "reclaims_total": dict(sorted(inv.reclaims.items())),
        "gc": {
            "last_success": last.finished_at.isoformat() if last else None,
            "last_success_age_seconds": (inv.read_at - last.finished_at).total_seconds() if last else None,
            "last_sweep_duration_seconds": last.duration_seconds if last else None,
            "last_sweep_results": {k: last.counts.get(k, 0) for k in OUTCOMES} if last else {},
            "skipped_sweeps": gc.skipped_since_success,
            "last_skipped": gc.last_skipped_at.isoformat() if gc.last_skipped_at else None,
        },
    }


def lines(snap: Snapshot) -> list[str]:
    """The summary as text (pure)."""
    inv, gc = snap.inventory, snap.gc
    by_state = inv.volumes_by_state()
    total_bytes = sum(g.requested_bytes for g in inv.groups)
    out = [f"Staging volumes at {inv.read_at.strftime('%Y-%m-%d %H:%M:%S UTC')}",
           "  live:       " + ", ".join(f"{n} {state}" for state, n in by_state.items())
           + f"; {format_bytes(_dec(total_bytes))} requested"]
    for (namespace, storage_class), value in sorted(inv.requested_bytes().items()):
        count = sum(g.count for g in inv.groups if (g.namespace, g.storage_class) == (namespace, storage_class))
        out.append(f"    {namespace} / {storage_class}: {count} volume(s), {format_bytes(_dec(value))}")
    unknown = "unknown (the runs table cannot be read)"
    kept = f"  failed-run kept: {unknown if inv.failed_kept is None else inv.failed_kept}"
    if inv.failed_kept:
        kept += f" (oldest run ended {_age(inv.oldest_failed_kept_seconds())} ago)"
    out.append(kept)
    held = f"  held: {inv.held}"
    if inv.held:
        held += f" (oldest hold set {_age(inv.oldest_hold_seconds())} ago; `leoflow-staging volumes` shows until when)"
    out.append(held)
    if by_state.get("reclaiming"):
        out.append(f"  reclaiming: oldest started {_age(inv.oldest_reclaiming_seconds())} ago")
    out.append("  reclaimed (all time): " + (", ".join(f"{r} {n}" for r, n in sorted(inv.reclaims.items()))
                                             or "none"))
    last = gc.last_success
    out.append("GC")
    if last is None:
        out.append("  last completed sweep: never recorded")
    else:
        ago = _age((inv.read_at - last.finished_at).total_seconds())
        out.append(f"  last completed sweep: {last.finished_at.strftime('%Y-%m-%d %H:%M:%S UTC')}"
                   f" ({ago} ago), took {last.duration_seconds:.1f}s")
        out.append("  its results: " + ", ".join(f"{k} {last.counts.get(k, 0)}" for k in OUTCOMES))
    skipped = f"  skipped sweeps since: {gc.skipped_since_success}"
    if gc.last_skipped_at:
        skipped += f" (last {gc.last_skipped_at.strftime('%Y-%m-%d %H:%M:%S UTC')})"
    out.append(skipped)
    return out


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def summary(settings: Settings, *, as_json: bool, now: dt.datetime | None = None) -> int:
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=1)
    snap = load_snapshot(engine, settings.runs, now=now or dt.datetime.now(dt.UTC))
    if as_json:
        print(json.dumps(as_dict(snap)))
    else:
        print("\n".join(lines(snap)))
    return 0
