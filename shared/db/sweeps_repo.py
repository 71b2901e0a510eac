"""Writes and reads of ``gc_sweeps``: the GC's own record of its sweeps, with bounded retention."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from shared.db.engine import translate_errors
from shared.db.schema import gc_sweeps
from shared.sweeps import OUTCOMES, GcHealth, SweepRecord, SweepStatus

T = gc_sweeps
RETAIN = 2000  # rows kept: about a week of sweeps every 5 minutes, skipped ones included


def record_sweep(conn: sa.Connection, record: SweepRecord, *, retain: int = RETAIN) -> None:
    """Insert the sweep and, in the same transaction, prune all but the newest ``retain`` rows."""
    conn.execute(sa.insert(T).values(
        started_at=record.started_at, finished_at=record.finished_at, status=record.status.value,
        duration_seconds=record.duration_seconds,
        **{name: int(record.counts.get(name, 0)) for name in OUTCOMES}))
    cutoff = sa.select(T.c.id).order_by(T.c.id.desc()).offset(retain).limit(1).scalar_subquery()
    conn.execute(sa.delete(T).where(T.c.id <= cutoff))


def _record(row: Any) -> SweepRecord:
    m = row._mapping
    return SweepRecord(started_at=m["started_at"], finished_at=m["finished_at"],
                       status=SweepStatus(m["status"]), duration_seconds=float(m["duration_seconds"]),
                       counts={name: int(m[name]) for name in OUTCOMES})


def read_health(conn: sa.Connection) -> GcHealth:
    """The newest completed sweep, and the skipped sweeps after it (two indexed statements)."""
    last = conn.execute(sa.select(T).where(T.c.status == SweepStatus.COMPLETED.value)
                        .order_by(T.c.id.desc()).limit(1)).first()
    skipped = sa.select(sa.func.count().label("n"), sa.func.max(T.c.finished_at).label("at")).where(
        T.c.status == SweepStatus.SKIPPED.value)
    if last is not None:
        skipped = skipped.where(T.c.id > last.id)
    row = conn.execute(skipped).one()
    return GcHealth(last_success=_record(last) if last is not None else None,
                    skipped_since_success=int(row.n or 0), last_skipped_at=row.at)


def save_sweep(engine: sa.Engine, record: SweepRecord) -> None:
    with translate_errors("recording the sweep in gc_sweeps"), engine.begin() as conn:
        record_sweep(conn, record)


def load_health(engine: sa.Engine) -> GcHealth:
    with translate_errors("reading gc_sweeps"), engine.connect() as conn:
        return read_health(conn)
