"""Reads and writes of ``staging_volumes``; every function takes a connection (the warm path's one read an
engine), returns plain data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql

from shared.db import reclaim_counts
from shared.db.schema import LIVE, staging_volumes
from shared.volumes import DeleteReason, NewVolume, VolumeRecord, VolumeState

T = staging_volumes


# A dict lookup, not the Enum call (~1 us a row on the warm path and over a sweep's 100k rows); an unknown
# value still raises the Enum's ValueError.
_STATES: dict[str, VolumeState] = {s.value: s for s in VolumeState}
_REASONS: dict[str, DeleteReason] = {r.value: r for r in DeleteReason}


def record_of(row: sa.Row[Any]) -> VolumeRecord:
    m = row._mapping
    state, reason = m["state"], m["delete_reason"]
    return VolumeRecord(
        id=m["id"], namespace=m["namespace"], pvc_name=m["pvc_name"], pvc_uid=m["pvc_uid"],
        dag_id=m["dag_id"], run_id=m["run_id"], storage_class=m["storage_class"], size=m["size"],
        state=_STATES.get(state) or VolumeState(state), created_at=m["created_at"],
        reclaim_started_at=m["reclaim_started_at"], deleted_at=m["deleted_at"],
        delete_reason=(_REASONS.get(reason) or DeleteReason(reason)) if reason else None,
        detail=m["detail"], held_until=m["held_until"], hold_reason=m["hold_reason"], held_by=m["held_by"],
        held_at=m["held_at"], shared_claim=m["shared_claim"], bytes_freed=m["bytes_freed"],
    )


def not_held(now: dt.datetime) -> sa.ColumnElement[bool]:
    """SQL: no hold keeps the row at ``now`` (the guard of every transition to ``reclaiming``)."""
    return sa.or_(T.c.held_until.is_(None), T.c.held_until <= now)


_LIVE_ROW = sa.select(T).where(T.c.namespace == sa.bindparam("ns"), T.c.pvc_name == sa.bindparam("name"), LIVE)
_LIVE_ROW_SHARED = _LIVE_ROW.with_for_update(read=True)


def live_volume(conn: sa.Connection, namespace: str, pvc_name: str, *, lock: bool) -> VolumeRecord | None:
    """The not-deleted row for the PVC; with ``lock``, a shared row lock held until commit, so a
    concurrent GC transition is either seen or waits for this transaction."""
    row = conn.execute(_LIVE_ROW_SHARED if lock else _LIVE_ROW, {"ns": namespace, "name": pvc_name}).first()
    return record_of(row) if row else None


def read_live_volume(engine: sa.Engine, namespace: str, pvc_name: str) -> VolumeRecord | None:
    """The not-deleted row for the PVC (None when there is none): the webhook's warm-path read.

    One statement, ``SELECT ... FOR SHARE``: a GC transition to ``reclaiming`` in flight is waited for, then
    seen. ``engine`` should be autocommit (``make_engine(autocommit=True)``): the statement is its own
    transaction, one round trip, and the row lock ends with it. A pooled connection found dead (the
    database restarted) is discarded by SQLAlchemy and the read retried once on a fresh one.
    """
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                row = conn.execute(_LIVE_ROW_SHARED, {"ns": namespace, "name": pvc_name}).first()
                conn.commit()  # no round trip on an autocommit engine; ends the transaction on another
            return record_of(row) if row else None
        except exc.DBAPIError as err:
            if attempt == 1 and err.connection_invalidated:
                continue
            raise
    return None  # pragma: no cover - the loop returns or raises


def insert_active(conn: sa.Connection, volume: NewVolume, *, now: dt.datetime) -> bool:
    """Record a new active volume unless a live row for the PVC already exists (then nothing); whether it did."""
    values = {
        "namespace": volume.namespace, "pvc_name": volume.pvc_name, "pvc_uid": volume.pvc_uid,
        "dag_id": volume.dag_id, "run_id": volume.run_id, "storage_class": volume.storage_class,
        "size": volume.size, "state": VolumeState.ACTIVE.value, "created_at": now,
        "mode": "shared" if volume.shared_claim else "claim", "shared_claim": volume.shared_claim,
    }
    result = conn.execute(postgresql.insert(T).values(values).on_conflict_do_nothing(
        index_elements=["namespace", "pvc_name"], index_where=sa.text("state <> 'deleted'")))
    return result.rowcount == 1


def last_deleted(conn: sa.Connection, namespace: str, pvc_name: str, *, dag_id: str,
                 run_id: str) -> VolumeRecord | None:
    """The run's newest ``deleted`` row for this claim name (None when the run never had one): one lookup in
    the run index, made only when a claim is being created."""
    row = conn.execute(
        sa.select(T).where(T.c.dag_id == dag_id, T.c.run_id == run_id, T.c.namespace == namespace,
                           T.c.pvc_name == pvc_name, T.c.state == VolumeState.DELETED.value)
        .order_by(T.c.id.desc()).limit(1)).first()
    return record_of(row) if row else None


def close_missing(conn: sa.Connection, row_id: int, *, now: dt.datetime, detail: str) -> bool:
    """Close an active row whose PVC no longer exists (reason ``pvc_missing``; counted)."""
    result = conn.execute(
        sa.update(T)
        .where(T.c.id == row_id, T.c.state == VolumeState.ACTIVE.value)
        .values(state=VolumeState.DELETED.value, deleted_at=now,
                delete_reason=DeleteReason.PVC_MISSING.value, detail=detail)
        .returning(T.c.delete_reason)
    ).all()
    reclaim_counts.add(conn, (row.delete_reason for row in result))
    return len(result) == 1


def begin_reclaim(
    conn: sa.Connection, row_id: int, *, reason: DeleteReason, now: dt.datetime,
    still_reclaimable: sa.ColumnElement[bool],
) -> bool:
    """``active`` -> ``reclaiming`` only if ``still_reclaimable`` holds and no hold keeps the row at this
    moment."""
    result = conn.execute(
        sa.update(T)
        .where(T.c.id == row_id, T.c.state == VolumeState.ACTIVE.value, not_held(now), still_reclaimable)
        .values(state=VolumeState.RECLAIMING.value, reclaim_started_at=now,
                delete_reason=reason.value, detail=None)
    )
    return result.rowcount == 1


def abort_reclaim(conn: sa.Connection, row_id: int, *, detail: str) -> bool:
    """``reclaiming`` -> ``active``: the run came back before its PVC was deleted."""
    result = conn.execute(
        sa.update(T)
        .where(T.c.id == row_id, T.c.state == VolumeState.RECLAIMING.value)
        .values(state=VolumeState.ACTIVE.value, reclaim_started_at=None, delete_reason=None,
                detail=detail)
    )
    return result.rowcount == 1


def finish_reclaim(conn: sa.Connection, row_id: int, *, now: dt.datetime, bytes_freed: int | None = None) -> bool:
    """``reclaiming`` -> ``deleted``: the PVC (or the shared-claim directory, which held ``bytes_freed``) is gone
    (counted under the row's reason)."""
    result = conn.execute(
        sa.update(T)
        .where(T.c.id == row_id, T.c.state == VolumeState.RECLAIMING.value)
        .values(state=VolumeState.DELETED.value, deleted_at=now, detail=None, bytes_freed=bytes_freed)
        .returning(T.c.delete_reason)
    ).all()
    reclaim_counts.add(conn, (row.delete_reason for row in result))
    if bytes_freed and result and result[0].delete_reason:
        reclaim_counts.add_bytes(conn, result[0].delete_reason, bytes_freed)
    return len(result) == 1


def set_reason(conn: sa.Connection, row_id: int, reason: DeleteReason) -> None:
    """The reason of a row being reclaimed, when its run moved to another reclaimable state meanwhile."""
    conn.execute(sa.update(T).where(T.c.id == row_id, T.c.state == VolumeState.RECLAIMING.value)
                 .values(delete_reason=reason.value))


def set_detail(conn: sa.Connection, row_id: int, detail: str | None) -> None:
    conn.execute(sa.update(T).where(T.c.id == row_id).values(detail=detail))


def list_volumes(
    conn: sa.Connection, *, state: str | None = None, dag_id: str | None = None,
    run_id: str | None = None, limit: int | None = None,
) -> list[VolumeRecord]:
    """The audit table, newest first, filtered."""
    query = sa.select(T).order_by(T.c.id.desc())
    if state:
        query = query.where(T.c.state == state)
    if dag_id:
        query = query.where(T.c.dag_id == dag_id)
    if run_id:
        query = query.where(T.c.run_id == run_id)
    if limit:
        query = query.limit(limit)
    return [record_of(row) for row in conn.execute(query)]


def iter_live(conn: sa.Connection, *, batch_size: int) -> Iterator[list[VolumeRecord]]:
    """All not-deleted rows in id order, a batch at a time (keyset pagination, bounded memory)."""
    last = 0
    while True:
        rows = conn.execute(
            sa.select(T).where(LIVE, T.c.id > last).order_by(T.c.id).limit(batch_size)
        ).all()
        if not rows:
            return
        batch = [record_of(r) for r in rows]
        last = batch[-1].id
        yield batch


def live_names(conn: sa.Connection, keys: Sequence[tuple[str, str]], *, chunk: int = 500) -> set[tuple[str, str]]:
    """Which of the (namespace, pvc_name) keys have a live row (one query per ``chunk`` keys)."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(keys), chunk):
        part = list(keys[start:start + chunk])
        # Join against unnest(arrays): one lookup in the live-name index per key (a row-value IN list
        # of hundreds of pairs is planned as a scan of the table, per chunk).
        text_array = postgresql.ARRAY(sa.String)
        wanted = sa.func.unnest(sa.bindparam("nss", type_=text_array), sa.bindparam("names", type_=text_array)
                                ).table_valued("n", "p").render_derived(name="wanted")
        query = sa.select(T.c.namespace, T.c.pvc_name).join_from(
            T, wanted, sa.and_(T.c.namespace == wanted.c.n, T.c.pvc_name == wanted.c.p)).where(LIVE)
        rows = conn.execute(query, {"nss": [n for n, _ in part], "names": [p for _, p in part]})
        found |= {(r.namespace, r.pvc_name) for r in rows}
    return found
