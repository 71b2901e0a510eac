"""leoflow_staging_live_rows(namespace, names): the webhook's per-admission read as a PL/pgSQL function.

PL/pgSQL keeps the plan of the statement inside a function for the whole database session, so each
admission skips parsing and planning it (about a third of the read's server time, docs/performance.md).
Unlike a prepared statement this needs no state on the connection, so it works the same through a
transaction-pooling PgBouncer. The statement is the Core statement ``volumes_repo._LIVE_ROWS_NAMED``;
tests/integration/test_live_read.py checks that the two return the same rows. PostgreSQL only (SQLite
reads with the Core statement).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION leoflow_staging_live_rows(p_namespace varchar, p_names varchar[])
RETURNS SETOF staging_volumes LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    -- The not-deleted rows under any of the names, oldest first, each share-locked (FOR SHARE): a GC
    -- transition of one of them that is in flight is waited for, then seen.
    RETURN QUERY
        SELECT * FROM staging_volumes v
        WHERE v.namespace = p_namespace AND v.pvc_name = ANY (p_names) AND v.state <> 'deleted'
        ORDER BY v.id
        FOR SHARE;
END
$body$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS leoflow_staging_live_rows(varchar, varchar[])")
