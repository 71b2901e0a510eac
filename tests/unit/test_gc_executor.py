"""The GC executor (and the sweep around it) with fakes of its adapters: the guarded transitions of
staging_volumes, the runs table, and the Kubernetes deletions with their uid preconditions.

What is asserted here is the order and the conditions of the side effects; the SQL guards, the row locks
and the apiserver's preconditions themselves are proven against the real PostgreSQL and apiserver in
tests/integration, tests/e2e/test_gc.py and tests/e2e/test_gc_races.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from gc_job import health, sweep
from gc_job.executor import Executor
from gc_job.plan import Action, Decision, GcPolicy, decide
from gc_job.results import Outcome, Result
from gc_job.sweep import SweepConfig, Sweeper
from shared.db.locks import GcLock
from shared.errors import DatabaseUnavailable, KubeUnavailable, LockLost
from shared.naming import pvc_name
from shared.settings import RunsTable
from shared.sweeps import SweepRecord
from shared.volumes import DeleteReason, RunId, RunState, VolumeRecord, VolumeState
from tests.unit.fakes import T0, FakeDb, FakeEngine, FakeKube

NOW = T0
H = dt.timedelta(hours=1)
RUNS = RunsTable()
POLICY = GcPolicy(failed_ttl=24 * H, success_states=RUNS.success_states, failed_states=RUNS.failed_states,
                  adopt_min_age=dt.timedelta(minutes=2))
DAG = "etl"


def _no_touch() -> None:
    pass


class World:
    """Fakes sharing one log of side effects, and the executor over them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str] = []
        self.db = FakeDb(log=self.log).install(monkeypatch)
        self.kube = FakeKube(log=self.log)
        self.engine = FakeEngine()
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.pod_uids: dict[str, str] = {}

    def volume(self, run_id: str, state: str | None = "success", *, end: dt.datetime | None = None,
               namespace: str = "ns", row_state: VolumeState = VolumeState.ACTIVE,
               reason: DeleteReason | None = None) -> VolumeRecord:
        """A recorded claim of run ``run_id`` whose run is in ``state`` (None: not in the runs table)."""
        name = pvc_name(DAG, run_id)
        claim = self.kube.add_claim(namespace=namespace, name=name, dag_id=DAG, run_id=run_id)
        if state is not None:
            self.db.runs[RunId(DAG, run_id)] = RunState(state, end or NOW - 2 * H)
        return self.db.add_row(namespace=namespace, pvc_name=name, pvc_uid=claim.uid, dag_id=DAG, run_id=run_id,
                               state=row_state, reason=reason)

    def set_run(self, run_id: str, state: str | None, end: dt.datetime | None = None) -> None:
        if state is None:
            self.db.runs.pop(RunId(DAG, run_id), None)
        else:
            self.db.runs[RunId(DAG, run_id)] = RunState(state, end or NOW - 2 * H)

    def decision(self, row: VolumeRecord) -> Decision:
        """What the planner decides for the row now (the pure planner, as the sweep calls it)."""
        return decide(self.db.rows[row.id], self.db.runs.get(row.run), True, now=NOW, policy=POLICY)

    def executor(self, *, delete_finished_pods: bool = True) -> Executor:
        return Executor(engine=self.engine, kube=self.kube, runs=RUNS, policy=POLICY, clock=lambda: NOW,
                        delete_finished_pods=delete_finished_pods,
                        on_event=lambda level, fields: self.events.append((level, fields)))

    def reclaim(self, decisions: list[Decision], *, batch: bool, touch: Any = _no_touch) -> list[Result]:
        """The two ways a reclaim is applied: ``reclaim_batch`` (fresh reclaims) or ``apply`` one at a time."""
        executor = self.executor()
        if batch:
            return executor.reclaim_batch(decisions, touch=touch, parallel=map)
        return [executor.apply(d) for d in decisions]

    def state(self, row: VolumeRecord) -> tuple[VolumeState, DeleteReason | None]:
        current = self.db.rows[row.id]
        return current.state, current.delete_reason


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


BOTH = pytest.mark.parametrize("batch", [True, False], ids=["reclaim_batch", "apply"])


def delete_of(row: VolumeRecord, uid: str | None = None) -> str:
    return f"kube:delete_claim:{row.namespace}/{row.pvc_name}@{uid or row.pvc_uid}"


# -- the order of a reclaim ----------------------------------------------------------------------------------------

@BOTH
def test_a_reclaim_marks_the_row_reclaiming_before_deleting_the_claim(world: World, batch: bool) -> None:
    row = world.volume("done", "success")
    [result] = world.reclaim([world.decision(row)], batch=batch)
    assert (result.outcome, result.detail) == (Outcome.TERMINATING, "delete issued")
    begin = "db:begin_reclaims" if batch else "db:begin_reclaim"
    assert world.log == [f"{begin}:{row.id}", delete_of(row)]  # the transition, then the uid-guarded delete
    assert world.state(row) == (VolumeState.RECLAIMING, DeleteReason.RUN_SUCCEEDED)
    [done] = world.executor().settle([result], grace=0)
    assert (done.outcome, world.state(row)) == (Outcome.RECLAIMED, (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED))
    assert world.log[-1] == f"db:finish_reclaims:{row.id}"


@BOTH
@pytest.mark.parametrize(("planned", "now"), [
    ("success", "running"),  # cleared and re-run since planning
    (None, "queued"),  # an orphan whose run appeared
    ("failed", "up_for_retry"),
], ids=["success-then-running", "orphan-then-queued", "failed-then-retrying"])
def test_no_delete_when_the_guarded_transition_finds_the_run_no_longer_reclaimable(
        world: World, batch: bool, planned: str | None, now: str) -> None:
    row = world.volume("r", planned, end=NOW - 30 * H)
    decision = world.decision(row)
    assert decision.action is Action.RECLAIM
    world.set_run("r", now)
    [result] = world.reclaim([decision], batch=batch)
    assert (result.outcome, result.detail) == (Outcome.KEPT, "the run changed since planning; kept")
    assert world.kube.deletes() == [] and world.db.writes() == []
    assert world.state(row) == (VolumeState.ACTIVE, None)


@BOTH
def test_a_run_that_comes_back_after_the_transition_aborts_before_the_delete(world: World, batch: bool) -> None:
    row = world.volume("r", "success")
    world.db.hooks["begin_reclaims" if batch else "begin_reclaim"] = lambda: world.set_run("r", "queued")
    [result] = world.reclaim([world.decision(row)], batch=batch)
    assert result.outcome is Outcome.ABORTED
    assert world.kube.deletes() == []
    assert world.state(row) == (VolumeState.ACTIVE, None)
    assert world.db.rows[row.id].detail == "run came back before its PVC was deleted"


@BOTH
def test_a_failed_run_that_turns_success_meanwhile_is_reclaimed_with_todays_reason(world: World, batch: bool) -> None:
    row = world.volume("flip", "failed", end=NOW - 25 * H)
    decision = world.decision(row)
    assert decision.reason is DeleteReason.TTL_EXPIRED
    world.db.hooks["begin_reclaims" if batch else "begin_reclaim"] = lambda: world.set_run("flip", "success")
    [result] = world.reclaim([decision], batch=batch)
    assert (result.outcome, result.decision.reason, result.decision.run_state) == (
        Outcome.TERMINATING, DeleteReason.RUN_SUCCEEDED, "success")
    assert world.state(row) == (VolumeState.RECLAIMING, DeleteReason.RUN_SUCCEEDED)
    assert world.kube.deletes() == [delete_of(row)]


# -- a claim re-created under the same name ------------------------------------------------------------------------

def test_a_claim_recreated_before_the_reclaim_is_never_deleted_and_the_row_is_closed_as_missing(world: World) -> None:
    row = world.volume("r", "success")
    fresh = world.kube.add_claim(name=row.pvc_name, dag_id=DAG, run_id="r", uid="fresh-uid")  # same name, new uid
    [result] = world.reclaim([world.decision(row)], batch=False)
    assert (result.outcome, result.decision.reason) == (Outcome.HEALED, DeleteReason.PVC_MISSING)
    assert world.kube.deletes() == [] and world.kube.claims["ns", row.pvc_name] == fresh
    assert world.state(row) == (VolumeState.DELETED, DeleteReason.PVC_MISSING)


def test_a_claim_recreated_between_the_transition_and_the_delete_survives_the_batch(world: World) -> None:
    row = world.volume("r", "success")
    other = world.volume("s", "success")

    def recreate() -> None:  # someone deletes the PVC and a new one of the same name appears
        world.kube.add_claim(name=row.pvc_name, dag_id=DAG, run_id="r", uid="fresh-uid")

    world.db.hooks["begin_reclaims"] = recreate
    results = {r.decision.pvc_name: r for r in world.reclaim([world.decision(row), world.decision(other)],
                                                              batch=True)}
    assert world.kube.claims["ns", row.pvc_name].uid == "fresh-uid"  # the uid precondition refused the delete
    assert (results[row.pvc_name].outcome, results[row.pvc_name].decision.reason) == (
        Outcome.HEALED, DeleteReason.PVC_MISSING)
    assert world.state(row) == (VolumeState.DELETED, DeleteReason.PVC_MISSING)  # the GC deleted nothing
    assert results[other.pvc_name].outcome is Outcome.TERMINATING
    assert world.kube.deletes() == [delete_of(other)]


def test_a_claim_recreated_between_the_read_and_the_delete_survives_apply(world: World) -> None:
    row = world.volume("r", "success")
    world.kube.hooks["read_claim"] = lambda: world.kube.add_claim(name=row.pvc_name, dag_id=DAG, run_id="r",
                                                                  uid="fresh-uid")
    [result] = world.reclaim([world.decision(row)], batch=False)
    assert result.outcome is Outcome.FAILED and "no longer uid" in result.detail
    assert world.kube.claims["ns", row.pvc_name].uid == "fresh-uid" and world.kube.deletes() == []
    # The next sweep resumes the row: the claim it recorded is gone, the new one is left alone.
    [resumed] = world.reclaim([world.decision(row)], batch=False)
    assert world.kube.deletes() == [] and world.kube.claims["ns", row.pvc_name].uid == "fresh-uid"
    assert world.db.rows[row.id].state is VolumeState.DELETED and resumed.outcome is not Outcome.FAILED


def test_a_resumed_reclaim_whose_claim_vanishes_before_its_delete_is_audited_as_pvc_missing(world: World) -> None:
    row = world.volume("r", "success", row_state=VolumeState.RECLAIMING, reason=DeleteReason.RUN_SUCCEEDED)
    world.kube.hooks["read_claim"] = lambda: world.kube.claims.pop(("ns", row.pvc_name))  # deleted by hand
    [result] = world.reclaim([world.decision(row)], batch=False)
    assert world.kube.deletes() == []
    assert world.state(row) == (VolumeState.DELETED, DeleteReason.PVC_MISSING)
    assert result.outcome is Outcome.HEALED


def test_a_resumed_reclaim_deletes_with_the_rows_uid(world: World) -> None:
    row = world.volume("r", "success", row_state=VolumeState.RECLAIMING, reason=DeleteReason.RUN_SUCCEEDED)
    [result] = world.reclaim([world.decision(row)], batch=False)
    assert result.outcome is Outcome.TERMINATING and world.log == [delete_of(row)]  # no second transition


# -- finished pods holding a reclaimed claim -----------------------------------------------------------------------

def _reclaim_held(world: World, phases: dict[str, str], *, delete_finished_pods: bool = True,
                  run_back: bool = False) -> tuple[VolumeRecord, Result]:
    row = world.volume("r", "success")
    for name, phase in phases.items():
        world.kube.add_pod(name=name, claim=row.pvc_name, phase=phase, inspect=name.startswith("leoflow-inspect"))
    world.pod_uids = {name: pod.uid for (_, name), (pod, _) in world.kube.pods.items()}
    [pending] = world.reclaim([world.decision(row)], batch=True)
    assert pending.outcome is Outcome.TERMINATING and world.kube.claims["ns", row.pvc_name].terminating
    if run_back:
        world.set_run("r", "queued")
    [done] = world.executor(delete_finished_pods=delete_finished_pods).settle([pending], grace=0)
    return row, done


def test_finished_pods_holding_the_claim_are_deleted_and_the_claim_goes(world: World) -> None:
    row, done = _reclaim_held(world, {"a-ok": "Succeeded", "b-ko": "Failed"})
    assert sorted(e for e in world.log if e.startswith("kube:delete_pod")) == [  # each with its uid precondition
        f"kube:delete_pod:ns/a-ok@{world.pod_uids['a-ok']}", f"kube:delete_pod:ns/b-ko@{world.pod_uids['b-ko']}"]
    assert (done.outcome, world.state(row)) == (Outcome.RECLAIMED, (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED))
    assert [f["pod"] for _, f in world.events if f["event"] == "finished_pod_deleted"] == ["a-ok", "b-ko"]


@pytest.mark.parametrize("phase", ["Running", "Pending", "Unknown"])
def test_a_pod_that_may_still_run_is_never_deleted(world: World, phase: str) -> None:
    row, done = _reclaim_held(world, {"a-ok": "Succeeded", "z-live": phase})
    assert [e for e in world.log if e.startswith("kube:delete_pod")] == [
        f"kube:delete_pod:ns/a-ok@{world.pod_uids['a-ok']}"]
    assert ("ns", "z-live") in world.kube.pods
    assert (done.outcome, done.detail) == (Outcome.TERMINATING, f"Terminating, held by pod(s) z-live ({phase})")
    assert world.db.rows[row.id].detail == done.detail and world.state(row)[0] is VolumeState.RECLAIMING


@pytest.mark.parametrize("delete_finished_pods", [True, False])
def test_a_running_inspect_pod_never_keeps_a_reclaimed_claim(world: World, delete_finished_pods: bool) -> None:
    row, done = _reclaim_held(world, {"leoflow-inspect-abc": "Running", "a-ok": "Succeeded"},
                              delete_finished_pods=delete_finished_pods)
    deleted = [e for e in world.log if e.startswith("kube:delete_pod")]
    assert f"kube:delete_pod:ns/leoflow-inspect-abc@{world.pod_uids['leoflow-inspect-abc']}" in deleted
    assert [f["pod"] for _, f in world.events if f["event"] == "inspect_pod_deleted"] == ["leoflow-inspect-abc"]
    assert (f"kube:delete_pod:ns/a-ok@{world.pod_uids['a-ok']}" in deleted) is delete_finished_pods
    if delete_finished_pods:
        assert (done.outcome, world.state(row)[0]) == (Outcome.RECLAIMED, VolumeState.DELETED)


def test_an_inspect_pod_stays_when_the_run_came_back(world: World) -> None:
    _, done = _reclaim_held(world, {"leoflow-inspect-abc": "Running"}, run_back=True)
    assert [e for e in world.log if e.startswith("kube:delete_pod")] == [] and done.outcome is Outcome.TERMINATING


def test_finished_pods_stay_when_the_setting_is_off(world: World) -> None:
    _, done = _reclaim_held(world, {"a-ok": "Succeeded"}, delete_finished_pods=False)
    assert [e for e in world.log if e.startswith("kube:delete_pod")] == []
    assert (done.outcome, done.detail) == (Outcome.TERMINATING, "Terminating, held by pod(s) a-ok (Succeeded)")


def test_finished_pods_stay_when_the_run_came_back(world: World) -> None:
    _, done = _reclaim_held(world, {"a-ok": "Succeeded"}, run_back=True)
    assert [e for e in world.log if e.startswith("kube:delete_pod")] == [] and done.outcome is Outcome.TERMINATING


# -- one action's error never stops the others ---------------------------------------------------------------------

def test_a_failed_delete_in_a_batch_fails_that_item_only(world: World) -> None:
    rows = [world.volume(r, "success") for r in ("a", "b", "c")]
    world.kube.fail["delete_claim", rows[1].pvc_name] = KubeUnavailable("deleting PVC: HTTP 503 unavailable")
    results = {r.decision.pvc_name: r for r in world.reclaim([world.decision(r) for r in rows], batch=True)}
    assert [results[r.pvc_name].outcome for r in rows] == [Outcome.FAILED if r is rows[1] else Outcome.TERMINATING
                                                          for r in rows]
    assert "HTTP 503" in results[rows[1].pvc_name].detail
    assert world.kube.deletes() == [delete_of(rows[0]), delete_of(rows[2])]
    assert world.state(rows[1])[0] is VolumeState.RECLAIMING  # the next sweep resumes it


def test_an_unexpected_error_fails_its_item_and_apply_goes_on(world: World) -> None:
    rows = [world.volume(r, "success") for r in ("a", "b")]
    world.kube.fail["read_claim", rows[0].pvc_name] = RuntimeError("a malformed object")
    results = world.reclaim([world.decision(r) for r in rows], batch=False)
    assert [(r.outcome, r.detail) for r in results] == [
        (Outcome.FAILED, "unexpected RuntimeError: a malformed object"), (Outcome.TERMINATING, "delete issued")]
    assert world.kube.deletes() == [delete_of(rows[1])]


def test_a_failed_batch_transition_fails_every_item_and_deletes_nothing(world: World) -> None:
    rows = [world.volume(r, "success") for r in ("a", "b")]
    world.db.fail["begin_reclaims"] = DatabaseUnavailable("starting reclaims: connection refused")
    results = world.reclaim([world.decision(r) for r in rows], batch=True)
    assert [(r.outcome, r.detail) for r in results] == [
        (Outcome.FAILED, "starting reclaims: connection refused")] * 2
    assert world.kube.deletes() == [] and {world.state(r) for r in rows} == {(VolumeState.ACTIVE, None)}


def test_a_lost_lock_stops_the_batch_before_its_deletes(world: World) -> None:
    rows = [world.volume(r, "success") for r in ("a", "b")]
    touches: list[int] = []

    def touch() -> None:  # the lock is held for the transition, gone before the deletes
        touches.append(1)
        if len(touches) > 1:
            raise LockLost("the GC lock was lost")

    with pytest.raises(LockLost):
        world.reclaim([world.decision(r) for r in rows], batch=True, touch=touch)
    assert world.kube.deletes() == []
    assert {world.state(r)[0] for r in rows} == {VolumeState.RECLAIMING}  # the next sweep resumes them


def test_settling_goes_on_past_a_namespace_whose_pods_cannot_be_listed(world: World) -> None:
    held = {ns: world.volume(f"r-{ns}", "success", namespace=ns) for ns in ("ns-a", "ns-b")}
    for ns, row in held.items():
        world.kube.add_pod(namespace=ns, name="running", claim=row.pvc_name, phase="Running")
    pending = world.reclaim([world.decision(r) for r in held.values()], batch=True)
    world.kube.fail["pods_using_claims", "ns-a"] = KubeUnavailable("listing pods in ns-a: timed out")
    done = {r.decision.namespace: r for r in world.executor().settle(pending, grace=0)}
    assert (done["ns-a"].outcome, done["ns-a"].detail) == (Outcome.FAILED, "listing pods in ns-a: timed out")
    assert (done["ns-b"].outcome, done["ns-b"].detail) == (Outcome.TERMINATING,
                                                           "Terminating, held by pod(s) running (Running)")


# -- the sweep around the executor ---------------------------------------------------------------------------------

class SweepWorld(World):
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.out = io.StringIO()
        self.lines: list[dict[str, Any]] = []
        self.recorded: list[SweepRecord] = []

        @contextlib.contextmanager
        def held(engine: object, *, idle_timeout: float) -> Iterator[GcLock]:
            yield GcLock(None, held=True, idle_timeout=idle_timeout)  # no connection: touch does nothing

        monkeypatch.setattr(sweep, "single_flight", held)
        monkeypatch.setattr(health, "record", lambda engine, record: self.recorded.append(record))

    def run(self, *, dry_run: bool = False) -> int:
        sweeper = Sweeper(engine=self.engine, kube=self.kube, clock=lambda: NOW, out=self.out,
                          on_event=self.lines.append,
                          config=SweepConfig(runs=RUNS, policy=POLICY, batch_size=2, settle_seconds=0,
                                             parallelism=2, audit_retention=dt.timedelta(0)))
        return sweeper.run(dry_run=dry_run)

    def events_of(self, event: str) -> list[dict[str, Any]]:
        return [f for f in self.lines if f.get("event") == event]


@pytest.fixture
def sweep_world(monkeypatch: pytest.MonkeyPatch) -> SweepWorld:
    return SweepWorld(monkeypatch)


def test_a_dry_run_prints_the_plan_and_changes_nothing(sweep_world: SweepWorld) -> None:
    w = sweep_world
    done = w.volume("done", "success")
    w.volume("live", "running")
    w.volume("young-failure", "failed", end=NOW - H)
    lost = w.volume("lost", "running")
    del w.kube.claims["ns", lost.pvc_name]
    stray = w.kube.add_claim(name=pvc_name("x", "y"), dag_id="x", run_id="y")  # no row: adopted for real
    before = (dict(w.db.rows), dict(w.kube.claims))
    assert w.run(dry_run=True) == 0
    planned = [json.loads(line) for line in w.out.getvalue().splitlines()]
    assert sorted((p["event"], p["action"], p["pvc"], p["reason"]) for p in planned) == sorted([
        ("planned", "reclaim", done.pvc_name, "run_succeeded"),
        ("planned", "heal", lost.pvc_name, "pvc_missing"),
        ("planned", "adopt", stray.name, None)])
    assert w.log == [] and (dict(w.db.rows), dict(w.kube.claims)) == before and w.recorded == []
    [summary] = w.events_of("sweep_summary")
    assert summary["dry_run"] is True and summary["kept"] == 2 and summary["failed"] == 0
    assert summary["planned"] == {"reclaim:run_succeeded": 1, "heal:pvc_missing": 1, "adopt": 1}


def test_a_sweep_reports_a_failed_action_after_doing_the_others(sweep_world: SweepWorld,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    w = sweep_world
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bad, good = w.volume("bad", "success"), w.volume("good", "success")
    w.kube.fail["delete_claim", bad.pvc_name] = KubeUnavailable("deleting PVC: HTTP 503 unavailable")
    assert w.run() == 1  # non-zero, after the rest was done
    assert w.state(good) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)
    assert w.state(bad) == (VolumeState.RECLAIMING, DeleteReason.RUN_SUCCEEDED)
    [failed] = w.events_of("failed")
    assert (failed["pvc"], failed["run_id"]) == (bad.pvc_name, "bad") and "HTTP 503" in failed["detail"]
    assert [f["pvc"] for f in w.events_of("reclaimed")] == [good.pvc_name]
    [summary] = w.events_of("sweep_summary")
    assert (summary["reclaimed_total"], summary["failed"]) == (1, 1)
    assert [r.counts["failed"] for r in w.recorded] == [1]
    assert any(r.levelno == logging.ERROR and r.getMessage() == "failed" for r in caplog.records)
    # The next sweep resumes the failed item.
    w.kube.fail.clear()
    assert w.run() == 0
    assert w.state(bad) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)
    assert w.kube.claims == {}


# -- the operator's reclaim and holds ------------------------------------------------------------------------------

def _operator(row: VolumeRecord) -> Decision:
    return Decision(action=Action.RECLAIM, namespace=row.namespace, pvc_name=row.pvc_name, dag_id=row.dag_id,
                    run_id=row.run_id, why="reclaim: operator_request", reason=DeleteReason.OPERATOR_REQUEST,
                    volume=row)


def test_an_operators_reclaim_of_a_failed_run_inside_its_ttl_deletes_with_its_own_reason(world: World) -> None:
    row = world.volume("bad", "failed", end=NOW - H)  # the TTL runs for 23 h more: the GC would keep it
    [result] = world.reclaim([_operator(row)], batch=False)
    assert result.outcome is Outcome.TERMINATING and delete_of(row) in world.log
    assert world.state(row) == (VolumeState.RECLAIMING, DeleteReason.OPERATOR_REQUEST)  # not "ttl_expired"
    [done] = world.executor().settle([result], grace=0)
    assert done.outcome is Outcome.RECLAIMED and world.state(row) == (VolumeState.DELETED,
                                                                      DeleteReason.OPERATOR_REQUEST)


def test_an_operators_reclaim_is_aborted_when_the_run_comes_back_before_the_delete(world: World) -> None:
    row = world.volume("bad", "failed", end=NOW - H)
    world.db.hooks["begin_reclaim"] = lambda: world.set_run("bad", "queued")  # cleared in that instant
    [result] = world.reclaim([_operator(row)], batch=False)
    assert result.outcome is Outcome.ABORTED and delete_of(row) not in world.log
    assert world.state(row) == (VolumeState.ACTIVE, None)


def test_a_hold_set_after_planning_stops_the_guarded_transition(world: World) -> None:
    import dataclasses

    row = world.volume("done", "success")
    planned = world.decision(row)
    assert planned.action is Action.RECLAIM
    world.db.rows[row.id] = dataclasses.replace(world.db.rows[row.id], held_until=NOW + H)  # `hold` meanwhile
    for batch in (True, False):
        [result] = world.reclaim([planned], batch=batch)
        assert result.outcome is Outcome.KEPT
    assert world.state(row) == (VolumeState.ACTIVE, None) and not any("delete_claim" in e for e in world.log)
