"""A long audit history for tests and benchmarks: millions of ``deleted`` rows of ``staging_volumes`` in seconds,
and the statement /metrics used to count reclaims with (a scan of them all), to compare against."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db.schema import staging_volumes

# Keys grow with the row number, so every index is appended to (random keys make the insert several times slower).
_INSERT = """
INSERT INTO staging_volumes (namespace, pvc_name, dag_id, run_id, storage_class, size, state, created_at,
                             deleted_at, delete_reason)
SELECT 'history', 'leoflow-staging-h-' || lpad(g::text, 9, '0'), 'dag-' || lpad((g / 1000)::text, 6, '0'),
       'run-' || lpad(g::text, 9, '0'), 'nfs', '1Gi', 'deleted', now() - interval '30 days',
       now() - interval '20 days', (ARRAY['run_succeeded', 'ttl_expired', 'orphaned'])[1 + g % 3]
FROM generate_series(1, :n) g
"""

# What /metrics ran on every scrape before staging_reclaim_counts (revision 0005).
OLD_RECLAIM_COUNT = sa.text("SELECT delete_reason, count(*) FROM staging_volumes WHERE state = 'deleted' "
                            "AND delete_reason IS NOT NULL GROUP BY delete_reason")


def seed_deleted_rows(engine: sa.Engine, rows: int) -> None:
    """Insert ``rows`` deleted rows, counted in ``staging_reclaim_counts`` as the GC would have. The secondary
    indexes are dropped for the insert and built again after it (a sort is faster than row-by-row upkeep);
    the table is analysed, as autovacuum would do."""
    secondary = [ix for ix in staging_volumes.indexes if ix.name != "uq_staging_volumes_live"]
    with engine.begin() as conn:
        for ix in secondary:
            ix.drop(conn)
        conn.execute(sa.text(_INSERT), {"n": rows})
        conn.execute(sa.text(
            "INSERT INTO staging_reclaim_counts (reason, count) SELECT (ARRAY['run_succeeded', 'ttl_expired', "
            "'orphaned'])[1 + g % 3], count(*) FROM generate_series(1, :n) g GROUP BY 1 "
            "ON CONFLICT (reason) DO UPDATE SET count = staging_reclaim_counts.count + excluded.count"), {"n": rows})
        for ix in secondary:
            ix.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE staging_volumes"))
