"""The audit retention: deleting ``staging_volumes`` rows deleted longer ago than the retention.

Bounded batches (``BATCH`` rows per statement, each its own transaction, oldest first through the partial index
on ``deleted_at``), so no statement runs long and no lock is held for long. Counts by reason are in
``staging_reclaim_counts`` and are left alone: pruning never lowers a counter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from shared.db.engine import translate_errors
from shared.db.schema import staging_volumes
from shared.volumes import VolumeState

T = staging_volumes
BATCH = 5000


def prune_batch(conn: sa.Connection, *, cutoff: dt.datetime, limit: int = BATCH) -> int:
    """Delete at most ``limit`` rows deleted before ``cutoff``; returns how many."""
    oldest = (sa.select(T.c.id).where(T.c.state == VolumeState.DELETED.value, T.c.deleted_at < cutoff)
              .order_by(T.c.deleted_at).limit(limit).scalar_subquery())
    return conn.execute(sa.delete(T).where(T.c.id.in_(oldest))).rowcount


def prune_deleted(engine: sa.Engine, *, cutoff: dt.datetime, limit: int = BATCH,
                  between: Callable[[], None] = lambda: None) -> int:
    """Delete every row deleted before ``cutoff``, ``limit`` rows per transaction; ``between`` is called after
    each batch (the GC keeps its lock alive with it). Returns how many rows went."""
    total = 0
    while True:
        with translate_errors("pruning old audit rows"), engine.begin() as conn:
            pruned = prune_batch(conn, cutoff=cutoff, limit=limit)
        total += pruned
        between()
        if pruned < limit:
            return total
