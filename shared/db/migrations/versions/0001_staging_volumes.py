"""staging_volumes: one row per volume lifetime.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staging_volumes",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("pvc_name", sa.String(63), nullable=False),
        sa.Column("pvc_uid", sa.String(64), nullable=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("storage_class", sa.String(253), nullable=False),
        sa.Column("size", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reclaim_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delete_reason", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.CheckConstraint("state IN ('active', 'reclaiming', 'deleted')", name="ck_staging_volumes_state"),
        sa.CheckConstraint(
            "delete_reason IS NULL OR delete_reason IN "
            "('run_succeeded', 'ttl_expired', 'orphaned', 'pvc_missing')",
            name="ck_staging_volumes_delete_reason",
        ),
    )
    op.create_index(
        "uq_staging_volumes_live", "staging_volumes", ["namespace", "pvc_name"], unique=True,
        postgresql_where=sa.text("state <> 'deleted'"),
    )
    op.create_index("ix_staging_volumes_state_id", "staging_volumes", ["state", "id"])
    op.create_index("ix_staging_volumes_run", "staging_volumes", ["dag_id", "run_id"])


def downgrade() -> None:
    op.drop_table("staging_volumes")
