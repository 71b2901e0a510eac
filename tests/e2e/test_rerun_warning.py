"""A run that starts over on an empty volume is told so: the pod CREATE that makes the new claim comes back from
the real apiserver with the webhook's warning (the HTTP Warning header kubectl prints), and the new claim gets a
Warning Event saying it at length. After a success and after a failed run's TTL, reclaimed by the GC's own path;
a later pod of the re-run, and a run's very first pod, get no warning."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from gc_job.executor import Executor
from gc_job.plan import Action, Decision, GcPolicy
from gc_job.results import Outcome
from shared.db import volumes_repo
from shared.kube import KubeApi, make_api_client
from shared.settings import RunsTable
from shared.volumes import DeleteReason, RunState, VolumeState
from tests.e2e.conftest import staging_pvc_of
from tests.e2e.test_events import _events
from tests.support.orchestrator import create_runs_table, set_run
from tests.support.pods import task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e
H = dt.timedelta(hours=1)
WARNING = re.compile(r'^299 - "(?P<text>.*)"$')


@pytest.fixture
def runs(db: sa.Engine) -> Iterator[sa.Engine]:
    create_runs_table(db)  # the webhook's database gets the orchestrator's runs table (IF NOT EXISTS)
    yield db


def _create(core: client.CoreV1Api, api: client.ApiClient, namespace: str, run: str) -> tuple[str, list[str]]:
    """Create a task pod as kubectl does; the PVC it got and the apiserver's Warning headers (their texts)."""
    resp: Any = core.create_namespaced_pod(namespace, task_pod("etl", run), _preload_content=False)
    pod = json.loads(resp.data)
    warnings = []
    for header in resp.headers.getlist("Warning"):
        match = WARNING.match(header)
        assert match, header
        warnings.append(match.group("text"))
    pvc = staging_pvc_of(pod)
    assert pvc
    return pvc, warnings


def _reclaim(db: sa.Engine, kubeconfig: Path, namespace: str, pvc: str, reason: DeleteReason,
             run: RunState) -> dt.datetime:
    """Reclaim the run's volume through the GC's executor (the guarded path a sweep takes for it)."""
    with db.connect() as conn:
        row = volumes_repo.live_volume(conn, namespace, pvc, lock=False)
    assert row is not None
    kube = KubeApi(make_api_client(str(kubeconfig)), timeout=10, instance="default")
    executor = Executor(engine=db, kube=kube, runs=RunsTable(), policy=GcPolicy(
        failed_ttl=24 * H, success_states=("success",), failed_states=("failed",)),
        clock=lambda: dt.datetime.now(dt.UTC))
    started = executor.apply(Decision(action=Action.RECLAIM, namespace=namespace, pvc_name=pvc, dag_id="etl",
                                      run_id=row.run_id, why="test", reason=reason, volume=row,
                                      run_state=run.state, run_end=run.end_date))
    [result] = executor.settle([started], grace=30)
    assert result.outcome is Outcome.RECLAIMED, result
    with db.connect() as conn:
        [gone] = [r for r in volumes_repo.list_volumes(conn, run_id=row.run_id) if r.id == row.id]
    assert (gone.state, gone.delete_reason) == (VolumeState.DELETED, reason) and gone.deleted_at
    return gone.deleted_at


@pytest.mark.parametrize("case", ["after_success", "after_ttl"])
def test_a_rerun_on_an_empty_volume_is_warned_and_its_claim_gets_an_event(
        case: str, webhook: WebhookProcess, runs: sa.Engine, core: client.CoreV1Api, api: client.ApiClient,
        kubeconfig: Path, namespace: str) -> None:
    run = f"r-{case}"
    pvc, first = _create(core, api, namespace, run)
    # The run's first volume: no re-run warning (the session's class, nfs.csi.k8s.io, ignores the requested size,
    # which its profile says on the claim's creation: docs/storage.md).
    assert [w for w in first if "previous volume" in w] == [] and all("ignores the requested size" in w
                                                                       for w in first)
    if case == "after_success":
        set_run(runs, "etl", run, "success", dt.datetime.now(dt.UTC))
        reason, state = DeleteReason.RUN_SUCCEEDED, RunState("success", dt.datetime.now(dt.UTC))
    else:
        ended = dt.datetime.now(dt.UTC) - 25 * H
        set_run(runs, "etl", run, "failed", ended)
        reason, state = DeleteReason.TTL_EXPIRED, RunState("failed", ended)
    deleted_at = _reclaim(runs, kubeconfig, namespace, pvc, reason, state)
    set_run(runs, "etl", run, "queued")  # cleared and re-run

    again, warnings = _create(core, api, namespace, run)
    assert again == pvc  # the same name, a new and empty claim
    when = deleted_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    rerun = [w for w in warnings if "previous volume" in w]
    assert rerun == [f"leoflow-staging: previous volume reclaimed {when} ({reason.value}); new and empty: "
                     "clear the whole run"]
    assert all(len(w) <= 120 for w in warnings) and len(warnings) == len(first) + 1
    later, none = _create(core, api, namespace, run)
    assert (later, none) == (pvc, [])  # the re-run's later pods find the volume as usual

    new_uid = core.read_namespaced_persistent_volume_claim(pvc, namespace).metadata.uid
    events = _events(kubeconfig, namespace, pvc, want={"PreviousVolumeReclaimed"})
    [event] = [e for e in events if e["reason"] == "PreviousVolumeReclaimed"]
    assert event["type"] == "Warning" and event["involvedObject"]["uid"] == new_uid
    note = event["message"]
    assert f"it was reclaimed at {deleted_at.isoformat()} ({reason.value}: " in note
    assert "is new and empty" in note and "Clear the whole run" in note
