"""Table definitions: ``staging_volumes`` (ours) and the orchestrator's runs table (read only)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.settings import RunsTable
from shared.sweeps import OUTCOMES
from shared.volumes import DeleteReason, VolumeState

metadata = sa.MetaData()

staging_volumes = sa.Table(
    "staging_volumes",
    metadata,
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
    sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),  # migration 0005: holds
    sa.Column("hold_reason", sa.Text, nullable=True),
    sa.Column("held_by", sa.String(253), nullable=True),
    sa.Column("held_at", sa.DateTime(timezone=True), nullable=True),
    # migration 0006: the shared-claim mode (pvc_name is then the run's directory on shared_claim)
    sa.Column("mode", sa.String(16), nullable=False, server_default="claim"),
    sa.Column("shared_claim", sa.String(253), nullable=True),
    sa.Column("bytes_freed", sa.BigInteger, nullable=True),
    sa.CheckConstraint(
        "state IN (" + ", ".join(f"'{s.value}'" for s in VolumeState) + ")",
        name="ck_staging_volumes_state",
    ),
    sa.CheckConstraint(
        "(mode = 'claim' AND shared_claim IS NULL) OR (mode = 'shared' AND shared_claim IS NOT NULL)",
        name="ck_staging_volumes_mode",
    ),
    sa.CheckConstraint(
        "delete_reason IS NULL OR delete_reason IN ("
        + ", ".join(f"'{r.value}'" for r in DeleteReason) + ")",
        name="ck_staging_volumes_delete_reason",
    ),
)

LIVE = staging_volumes.c.state != VolumeState.DELETED.value

# At most one not-deleted row per (namespace, pvc_name); deleted rows stay as the audit trail.
sa.Index(
    "uq_staging_volumes_live",
    staging_volumes.c.namespace,
    staging_volumes.c.pvc_name,
    unique=True,
    postgresql_where=sa.text("state <> 'deleted'"),
)
sa.Index("ix_staging_volumes_state_id", staging_volumes.c.state, staging_volumes.c.id)
sa.Index("ix_staging_volumes_run", staging_volumes.c.dag_id, staging_volumes.c.run_id)
# The audit retention's prune (migration 0005): the oldest deleted rows first, without a scan.
sa.Index("ix_staging_volumes_deleted_at", staging_volumes.c.deleted_at,
         postgresql_where=sa.text("state = 'deleted'"))

# Reclaims by reason, counted by the code that marks rows deleted, in the same transaction (migration 0005):
# /metrics reads this instead of counting the audit rows, and pruning old rows never lowers a count.
staging_reclaim_counts = sa.Table(
    "staging_reclaim_counts",
    metadata,
    sa.Column("reason", sa.String(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),  # migration 0006: directories freed
)


def runs_table(config: RunsTable) -> sa.Table:
    """The orchestrator's runs table as configured; only the columns we read."""
    schema, _, name = config.table.rpartition(".")
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column(config.dag_id_column, sa.String(250), key="dag_id"),
        sa.Column(config.run_id_column, sa.String(250), key="run_id"),
        sa.Column(config.state_column, sa.String(50), key="state"),
        sa.Column(config.end_date_column, sa.DateTime(timezone=True), key="end_date"),
        schema=schema or None,
    )


# One row per GC sweep (migration 0002); only the newest rows are kept (sweeps_repo.RETAIN).
gc_sweeps = sa.Table(
    "gc_sweeps",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("duration_seconds", sa.Float, nullable=False),
    *(sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in OUTCOMES),
    sa.CheckConstraint("status IN ('completed', 'skipped')", name="ck_gc_sweeps_status"),
)
sa.Index("ix_gc_sweeps_status_id", gc_sweeps.c.status, gc_sweeps.c.id)
