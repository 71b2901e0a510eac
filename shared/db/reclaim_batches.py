"""The GC's guarded transitions of ``staging_volumes`` for many rows at once (one statement per step).

Each is the one-row transition of ``volumes_repo`` with the same guards in its WHERE, applied to a set of
row ids; it returns the ids it changed, so a row whose state changed under it (a webhook admission, another
sweep, an operator) is simply not in the answer and is left alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import sqlalchemy as sa

from shared.db import reclaim_counts
from shared.db.schema import staging_volumes
from shared.db.volumes_repo import not_held
from shared.volumes import DeleteReason, VolumeState

T = staging_volumes


def _ids(ids: Collection[int]) -> sa.ColumnElement[bool]:
    return T.c.id.in_(sorted(ids))  # one bound list; PostgreSQL plans it as = ANY over the primary key


def _deleted(conn: sa.Connection, ids: Collection[int], statement: sa.Update) -> set[int]:
    """``_changed`` for a statement that marks rows ``deleted``: their reasons are counted in the same
    transaction (``staging_reclaim_counts``)."""
    conn.execute(sa.select(T.c.id).where(_ids(ids)).order_by(T.c.id).with_for_update())
    rows = conn.execute(statement.returning(T.c.id, T.c.delete_reason)).all()
    reclaim_counts.add(conn, (row.delete_reason for row in rows))
    return {row.id for row in rows}


def _changed(conn: sa.Connection, ids: Collection[int], statement: sa.Update) -> set[int]:
    # Lock the rows in id order first: the UPDATE alone locks them in its plan's order (heap order under a
    # bitmap scan), and the webhook share-locks a run's rows in id order, so two orders could deadlock.
    conn.execute(sa.select(T.c.id).where(_ids(ids)).order_by(T.c.id).with_for_update())
    return {row.id for row in conn.execute(statement.returning(T.c.id))}


def begin_reclaims(conn: sa.Connection, ids: Collection[int], *, reason: DeleteReason, now: dt.datetime,
                   still_reclaimable: sa.ColumnElement[bool]) -> set[int]:
    """``active`` -> ``reclaiming`` for each row whose run still allows ``reason`` and that no hold keeps at this
    moment (evaluated per row inside the UPDATE, as in ``volumes_repo.begin_reclaim``)."""
    if not ids:
        return set()
    return _changed(conn, ids, sa.update(T)
                    .where(_ids(ids), T.c.state == VolumeState.ACTIVE.value, not_held(now), still_reclaimable)
                    .values(state=VolumeState.RECLAIMING.value, reclaim_started_at=now,
                            delete_reason=reason.value, detail=None))


def abort_reclaims(conn: sa.Connection, ids: Collection[int], *, detail: str) -> set[int]:
    """``reclaiming`` -> ``active``: the run came back before the PVC was deleted."""
    if not ids:
        return set()
    return _changed(conn, ids, sa.update(T)
                    .where(_ids(ids), T.c.state == VolumeState.RECLAIMING.value)
                    .values(state=VolumeState.ACTIVE.value, reclaim_started_at=None, delete_reason=None,
                            detail=detail))


def set_reasons(conn: sa.Connection, ids: Collection[int], reason: DeleteReason) -> set[int]:
    """The reason of rows being reclaimed whose run moved to another reclaimable state meanwhile."""
    if not ids:
        return set()
    return _changed(conn, ids, sa.update(T).where(_ids(ids), T.c.state == VolumeState.RECLAIMING.value)
                    .values(delete_reason=reason.value))


def finish_reclaims(conn: sa.Connection, ids: Collection[int], *, now: dt.datetime) -> set[int]:
    """``reclaiming`` -> ``deleted``: the PVCs are gone."""
    if not ids:
        return set()
    return _deleted(conn, ids, sa.update(T).where(_ids(ids), T.c.state == VolumeState.RECLAIMING.value)
                    .values(state=VolumeState.DELETED.value, deleted_at=now, detail=None))


def close_missing_reclaiming(conn: sa.Connection, ids: Collection[int], *, now: dt.datetime,
                             detail: str) -> set[int]:
    """``reclaiming`` -> ``deleted`` with reason ``pvc_missing``: the GC's delete found the PVC already gone
    (or its name taken by another PVC), so the GC deleted nothing and the audit must not claim it did."""
    if not ids:
        return set()
    return _deleted(conn, ids, sa.update(T).where(_ids(ids), T.c.state == VolumeState.RECLAIMING.value)
                    .values(state=VolumeState.DELETED.value, deleted_at=now,
                            delete_reason=DeleteReason.PVC_MISSING.value, detail=detail))


def set_details(conn: sa.Connection, ids: Collection[int], detail: str | None) -> None:
    """The same ``detail`` on many rows (e.g. why their PVCs are still Terminating)."""
    if ids:
        conn.execute(sa.update(T).where(_ids(ids)).values(detail=detail))
