"""Drop leoflow_staging_live_rows (revision 0003): the webhook's per-admission read is one SQLAlchemy Core
statement (``volumes_repo.read_live_volume``), so no database function is needed or granted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Revision 0003's function, word for word: a migration stays as it was written.
FUNCTION_0003 = """
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
    op.execute("DROP FUNCTION IF EXISTS leoflow_staging_live_rows(varchar, varchar[])")


def downgrade() -> None:
    op.execute(FUNCTION_0003)
