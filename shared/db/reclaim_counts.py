"""``staging_reclaim_counts``: reclaims by reason, counted where rows are marked deleted.

Every statement that moves rows to ``deleted`` (``volumes_repo``, ``reclaim_batches``) returns their reasons and
calls ``add`` in the same transaction, so a count is exactly the rows ever deleted with that reason. Counts only
go up: the audit retention's prune deletes old rows and leaves the counts alone, and /metrics reads one row per
reason (constant time, whatever the history).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.db.schema import staging_reclaim_counts

C = staging_reclaim_counts


def add(conn: sa.Connection, reasons: Iterable[str | None]) -> None:
    """Count one reclaim per reason given (None is skipped), in the caller's transaction. Reasons are upserted in
    sorted order: two transactions counting the same reasons lock their rows in the same order."""
    counted = Counter(r for r in reasons if r)
    for reason in sorted(counted):
        insert = postgresql.insert(C).values(reason=reason, count=counted[reason])
        conn.execute(insert.on_conflict_do_update(index_elements=[C.c.reason],
                                                  set_={"count": C.c.count + insert.excluded.count}))


def add_bytes(conn: sa.Connection, reason: str, freed: int) -> None:
    """Add what a removed shared-claim directory held to its reason's total, in the caller's transaction (the one
    that counted it)."""
    insert = postgresql.insert(C).values(reason=reason, count=0, bytes=freed)
    conn.execute(insert.on_conflict_do_update(index_elements=[C.c.reason],
                                              set_={"bytes": C.c.bytes + insert.excluded.bytes}))


def read_with_bytes(conn: sa.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Reclaims by reason and the bytes freed by removing shared-claim directories by reason, all time (one
    statement)."""
    rows = conn.execute(sa.select(C.c.reason, C.c.count, C.c.bytes)).all()
    return ({reason: int(n) for reason, n, _ in rows if n}, {reason: int(b) for reason, _, b in rows if b})


def read(conn: sa.Connection) -> dict[str, int]:
    """Reclaims by reason, all time (one row per reason)."""
    return {reason: int(n) for reason, n in conn.execute(sa.select(C.c.reason, C.c.count)) if n}
