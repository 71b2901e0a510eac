"""Whether the live row recorded under the run's claim name is the run's own (pure).

Names carry a 130-bit hash of the raw (dag_id, run_id) pair, so two runs never share a name in practice; the
check stays because it costs nothing and a shared volume would mix two runs' files.
"""

from __future__ import annotations

from shared.volumes import VolumeRecord
from webhook.verdicts import Verdict, deny


def _row_of_another_run(row: VolumeRecord, dag_id: str, run_id: str) -> Verdict:
    return deny("pvc_not_ours", f"leoflow-staging: the staging volume {row.pvc_name!r} in namespace "
                f"{row.namespace!r} is recorded for another run (dag_id {row.dag_id!r}, run_id {row.run_id!r}), "
                f"not for dag_id {dag_id!r}, run_id {run_id!r}: two runs whose names collide never share a "
                "volume; refusing. Report this to the platform team.")


def check_row(row: VolumeRecord | None, *, dag_id: str, run_id: str) -> VolumeRecord | Verdict | None:
    """``row`` when it is the run's own, a denial when it records another run, None when there is none."""
    if row is None or (row.dag_id, row.run_id) == (dag_id, run_id):
        return row
    return _row_of_another_run(row, dag_id, run_id)
