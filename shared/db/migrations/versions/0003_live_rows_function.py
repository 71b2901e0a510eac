"""leoflow_staging_live_rows(namespace, names): the webhook's per-admission read as a PL/pgSQL function.

PL/pgSQL kept the plan of the statement inside the function for the whole database session. Revision 0004
drops the function again: the webhook reads with one SQLAlchemy Core statement
(``volumes_repo.read_live_volume``).

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
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS leoflow_staging_live_rows(varchar, varchar[])")
