"""Holds on ``staging_volumes`` rows, and finding a run's rows (``leoflow-staging hold``, ``release``,
``reclaim``). Every function takes a connection and returns plain data."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from shared.db.schema import staging_volumes
from shared.db.volumes_repo import record_of
from shared.volumes import VolumeRecord, VolumeState

T = staging_volumes


def run_rows(conn: sa.Connection, dag_id: str, run_id: str, *, namespace: str | None = None) -> list[VolumeRecord]:
    """Every row of the run (live and deleted), newest first; by the run index."""
    query = sa.select(T).where(T.c.dag_id == dag_id, T.c.run_id == run_id).order_by(T.c.id.desc())
    if namespace is not None:
        query = query.where(T.c.namespace == namespace)
    return [record_of(row) for row in conn.execute(query)]


def set_hold(conn: sa.Connection, row_id: int, *, until: dt.datetime, reason: str | None, by: str | None,
             now: dt.datetime) -> VolumeRecord | None:
    """Hold an ``active`` row until ``until`` (replacing any hold it had); None when the row is no longer active
    (the GC started reclaiming it first: its UPDATE and this one are ordered by the row lock)."""
    row = conn.execute(
        sa.update(T).where(T.c.id == row_id, T.c.state == VolumeState.ACTIVE.value)
        .values(held_until=until, hold_reason=reason, held_by=by, held_at=now).returning(*T.c)).first()
    return record_of(row) if row else None


def release_hold(conn: sa.Connection, row_id: int, *, now: dt.datetime) -> VolumeRecord | None:
    """End the row's hold now (``held_until`` becomes ``now``; who, when and why stay as the audit of it); None
    when no hold was in force."""
    row = conn.execute(
        sa.update(T).where(T.c.id == row_id, T.c.held_until > now).values(held_until=now)
        .returning(*T.c)).first()
    return record_of(row) if row else None
