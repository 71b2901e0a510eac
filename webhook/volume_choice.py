"""Which live row is the run's volume, among the rows under the run's candidate names (pure).

A run's claim has the current name, or the legacy one when it was made before the longer hash
(issue 16.3). The row decides the name the pod gets: a run keeps the volume it already has.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.volumes import VolumeRecord
from webhook.verdicts import Verdict, deny


def _row_of_another_run(row: VolumeRecord, dag_id: str, run_id: str) -> Verdict:
    return deny("pvc_not_ours", f"leoflow-staging: the staging volume {row.pvc_name!r} in namespace "
                f"{row.namespace!r} is recorded for another run (dag_id {row.dag_id!r}, run_id {row.run_id!r}), "
                f"not for dag_id {dag_id!r}, run_id {run_id!r}: two runs whose names collide never share a "
                "volume; refusing. Report this to the platform team.")


def choose_row(rows: Sequence[VolumeRecord], *, dag_id: str, run_id: str,
               current_name: str) -> VolumeRecord | Verdict | None:
    """The run's own live row (the oldest when a legacy and a current one both exist: the one its first
    pods got), else a denial when another run's row holds the current name, else None (no volume yet).

    Another run's row under the legacy name is no obstacle: a new volume never takes a legacy name.
    """
    own = [r for r in rows if (r.dag_id, r.run_id) == (dag_id, run_id)]
    if own:
        return min(own, key=lambda r: r.id)
    for r in rows:
        if r.pvc_name == current_name:
            return _row_of_another_run(r, dag_id, run_id)
    return None
