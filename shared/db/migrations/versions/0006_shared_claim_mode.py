"""The shared-claim mode: a run's directory on one claim per namespace.

- ``staging_volumes.mode``: ``claim`` (the run's own PVC, every row before this revision) or ``shared`` (the
  run's directory, named ``pvc_name``, on the namespace's shared claim ``shared_claim``; ``pvc_uid`` is then that
  claim's uid);
- ``staging_volumes.bytes_freed``: what a shared-mode run's directory held when the GC removed it;
- ``staging_reclaim_counts.bytes``: those bytes summed by reason, all time (as the counts: never lowered).

The live-row uniqueness stays (namespace, pvc_name): a run has at most one live volume per namespace whatever
the mode (its directory's name is the name its claim would have), so an operator switching modes moves new runs
only, and a run in flight keeps the volume its row records.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("staging_volumes", sa.Column("mode", sa.String(16), nullable=False, server_default="claim"))
    op.add_column("staging_volumes", sa.Column("shared_claim", sa.String(253), nullable=True))
    op.add_column("staging_volumes", sa.Column("bytes_freed", sa.BigInteger, nullable=True))
    op.add_column("staging_reclaim_counts", sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"))
    op.create_check_constraint(
        "ck_staging_volumes_mode", "staging_volumes",
        "(mode = 'claim' AND shared_claim IS NULL) OR (mode = 'shared' AND shared_claim IS NOT NULL)")


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM staging_volumes WHERE mode = 'shared'")).scalar_one()
    if shared:  # 0005 would read them as claims named like the runs' directories: a person decides
        raise RuntimeError(f"{shared} staging_volumes row(s) record shared-claim directories, which revision 0005 "
                           "does not know; delete them before downgrading")
    op.drop_constraint("ck_staging_volumes_mode", "staging_volumes", type_="check")
    op.drop_column("staging_reclaim_counts", "bytes")
    op.drop_column("staging_volumes", "bytes_freed")
    op.drop_column("staging_volumes", "shared_claim")
    op.drop_column("staging_volumes", "mode")
