"""gc_sweeps: one row per GC sweep (start, end, status, counts by outcome), newest rows only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gc_sweeps",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("reclaimed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("terminating", sa.Integer, nullable=False, server_default="0"),
        sa.Column("kept", sa.Integer, nullable=False, server_default="0"),
        sa.Column("aborted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("adopted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("healed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("status IN ('completed', 'skipped')", name="ck_gc_sweeps_status"),
    )
    op.create_index("ix_gc_sweeps_status_id", "gc_sweeps", ["status", "id"])


def downgrade() -> None:
    op.drop_table("gc_sweeps")
