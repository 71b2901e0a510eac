"""Holds, the operator's reclaim, and an audit that stays cheap.

- ``staging_volumes`` gets a hold (``held_until``, ``hold_reason``, ``held_by``, ``held_at``): the GC keeps a
  held volume until the hold ends (``leoflow-staging hold`` / ``release``);
- the ``delete_reason`` check admits ``operator_request`` (``leoflow-staging reclaim``);
- ``staging_reclaim_counts(reason, count)``: reclaims by reason, kept by the code that marks rows deleted
  (never decremented), filled here from the rows that exist; /metrics reads it instead of counting rows;
- an index on ``deleted_at`` of deleted rows, for the audit retention's prune.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

REASONS_0001 = "('run_succeeded', 'ttl_expired', 'orphaned', 'pvc_missing')"
REASONS_0005 = "('run_succeeded', 'ttl_expired', 'orphaned', 'pvc_missing', 'operator_request')"


def upgrade() -> None:
    op.add_column("staging_volumes", sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("staging_volumes", sa.Column("hold_reason", sa.Text, nullable=True))
    op.add_column("staging_volumes", sa.Column("held_by", sa.String(253), nullable=True))
    op.add_column("staging_volumes", sa.Column("held_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("ck_staging_volumes_delete_reason", "staging_volumes", type_="check")
    op.create_check_constraint("ck_staging_volumes_delete_reason", "staging_volumes",
                               f"delete_reason IS NULL OR delete_reason IN {REASONS_0005}")
    op.create_index("ix_staging_volumes_deleted_at", "staging_volumes", ["deleted_at"],
                    postgresql_where=sa.text("state = 'deleted'"))
    op.create_table(
        "staging_reclaim_counts",
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.execute("INSERT INTO staging_reclaim_counts (reason, count) "
               "SELECT delete_reason, count(*) FROM staging_volumes "
               "WHERE state = 'deleted' AND delete_reason IS NOT NULL GROUP BY delete_reason")


def downgrade() -> None:
    operator = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM staging_volumes WHERE delete_reason = 'operator_request'")).scalar_one()
    if operator:  # the audit would lose why those volumes went: a person decides what they become
        raise RuntimeError(f"{operator} staging_volumes row(s) have delete_reason 'operator_request', which "
                           "revision 0004 does not know; change or delete them before downgrading")
    op.drop_table("staging_reclaim_counts")
    op.drop_index("ix_staging_volumes_deleted_at", "staging_volumes")
    op.drop_constraint("ck_staging_volumes_delete_reason", "staging_volumes", type_="check")
    op.create_check_constraint("ck_staging_volumes_delete_reason", "staging_volumes",
                               f"delete_reason IS NULL OR delete_reason IN {REASONS_0001}")
    for column in ("held_at", "held_by", "hold_reason", "held_until"):
        op.drop_column("staging_volumes", column)
