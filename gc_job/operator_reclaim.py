"""``leoflow-staging reclaim``: free one run's volume now, through the GC's own guarded path.

The row goes ``active -> reclaiming`` in the executor's guarded UPDATE (the run must have ended or be gone, and
no hold may keep the row, at that moment), the run is re-checked under a share lock just before the PVC delete
(uid precondition), and the row becomes ``deleted`` with reason ``operator_request`` once the PVC is gone. A
claim still Terminating after the settle wait stays ``reclaiming`` and the next GC sweep finishes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from gc_job.directory_reclaim import DirectoryReclaimer
from gc_job.executor import Executor
from gc_job.plan import Action, Decision, GcPolicy
from gc_job.results import Outcome, Result
from shared.db import runs_repo
from shared.db.engine import translate_errors
from shared.kube import KubeApi
from shared.settings import RunsTable
from shared.volumes import DeleteReason, RunState, VolumeRecord

if TYPE_CHECKING:
    import sqlalchemy as sa


def reclaim_now(volume: VolumeRecord, run: RunState | None, *, engine: sa.Engine, kube: KubeApi, runs: RunsTable,
                policy: GcPolicy, clock: Callable[[], dt.datetime], settle_seconds: float,
                delete_finished_pods: bool, directories: DirectoryReclaimer | None = None) -> Result:
    """Reclaim ``volume`` for an operator; the result says what happened (``reclaimed``, ``terminating``, ``kept``
    when the guard refused, ``aborted`` when the run came back, ``failed``)."""
    executor = Executor(engine=engine, kube=kube, runs=runs, policy=policy, clock=clock,
                        delete_finished_pods=delete_finished_pods)
    executor.directories = directories  # a shared-claim row: its directory is removed by a cleanup pod
    with translate_errors("reading the runs table"), engine.connect() as conn:
        executor.lock_runs = runs_repo.can_lock_runs(conn, runs)
    decision = Decision(action=Action.RECLAIM, namespace=volume.namespace, pvc_name=volume.pvc_name,
                        dag_id=volume.dag_id, run_id=volume.run_id, why="reclaim: operator_request",
                        reason=DeleteReason.OPERATOR_REQUEST, volume=volume,
                        run_state=run.state if run else None, run_end=run.end_date if run else None)
    result = executor.apply(decision)
    if result.outcome is not Outcome.TERMINATING:
        return result
    [settled] = executor.settle([result], grace=settle_seconds)
    return settled
