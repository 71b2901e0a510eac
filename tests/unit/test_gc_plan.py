"""The lifecycle rules as a pure function: every state, the TTL from end_date, orphans, healing."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from gc_job.plan import NOT_SERVED, Action, GcPolicy, decide, plan_adoptions, plan_batch
from gc_job.report import exit_code, summary
from gc_job.results import Outcome, Result
from shared.naming import pvc_name
from shared.objects import ClaimInfo
from shared.volumes import DeleteReason, RunId, RunState, VolumeRecord, VolumeState

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
POLICY = GcPolicy(failed_ttl=24 * H, success_states=("success",), failed_states=("failed",),
                  adopt_min_age=dt.timedelta(minutes=2))


def vol(created: dt.datetime = NOW - 48 * H, state: VolumeState = VolumeState.ACTIVE, run: str = "r",
        reason: DeleteReason | None = None) -> VolumeRecord:
    return VolumeRecord(id=1, namespace="ns", pvc_name=f"leoflow-staging-d-{run}-0123456789", pvc_uid="u",
                        dag_id="d", run_id=run, storage_class="nfs", size="1Gi", state=state, created_at=created,
                        delete_reason=reason)


def test_success_at_once_failed_after_ttl_from_end_date() -> None:
    assert decide(vol(), RunState("success", NOW), True, now=NOW, policy=POLICY).reason is DeleteReason.RUN_SUCCEEDED
    recent = decide(vol(created=NOW - 100 * H), RunState("failed", NOW - H), True, now=NOW, policy=POLICY)
    assert recent.action is Action.KEEP and "kept until" in recent.why
    old = decide(vol(), RunState("failed", NOW - 24 * H), True, now=NOW, policy=POLICY)
    assert old.reason is DeleteReason.TTL_EXPIRED


def test_live_runs_and_failed_without_end_are_kept() -> None:
    for state in ("queued", "running", "up_for_retry", None):
        assert decide(vol(), RunState(state, None), True, now=NOW, policy=POLICY).action is Action.KEEP
    no_end = decide(vol(), RunState("failed", None), True, now=NOW, policy=POLICY)
    assert no_end.action is Action.KEEP and "no end_date" in no_end.why


def test_orphans_on_sight_after_a_short_grace() -> None:
    assert decide(vol(), None, True, now=NOW, policy=POLICY).reason is DeleteReason.ORPHANED
    young = decide(vol(created=NOW - dt.timedelta(seconds=30)), None, True, now=NOW, policy=POLICY)
    assert young.action is Action.KEEP


def test_heal_only_a_kept_row_whose_pvc_is_gone_and_resume_reclaiming() -> None:
    assert decide(vol(), RunState("running", None), False, now=NOW, policy=POLICY).action is Action.HEAL
    assert decide(vol(), RunState("running", None), None, now=NOW, policy=POLICY).action is Action.KEEP
    resumed = decide(vol(state=VolumeState.RECLAIMING, reason=DeleteReason.TTL_EXPIRED), RunState("running", None),
                     True, now=NOW, policy=POLICY)
    assert resumed.action is Action.RECLAIM and resumed.reason is DeleteReason.TTL_EXPIRED


def test_plan_batch_uses_the_claims_index_with_a_grace_for_young_rows() -> None:
    rows = [vol(run="a"), vol(run="b", created=NOW - dt.timedelta(seconds=10))]
    runs = {RunId("d", "a"): RunState("running", None), RunId("d", "b"): RunState("running", None)}
    decisions = plan_batch(rows, runs, {}, now=NOW, policy=POLICY)
    assert [d.action for d in decisions] == [Action.HEAL, Action.KEEP]


def test_rows_outside_the_served_namespaces_are_kept_untouched() -> None:
    mine, elsewhere = vol(run="a"), replace(vol(run="b"), namespace="not-mine")
    runs = {RunId("d", "a"): RunState("success", NOW), RunId("d", "b"): RunState("success", NOW)}
    index = {("ns", mine.pvc_name): "u"}  # only the served namespaces are listed: "not-mine" has no claims here
    decisions = plan_batch([mine, elsewhere], runs, index, now=NOW, policy=POLICY, served={"ns"})
    assert [d.action for d in decisions] == [Action.RECLAIM, Action.KEEP]  # never healed as missing, never reclaimed
    assert decisions[1].why == NOT_SERVED
    assert [d.action for d in plan_batch([elsewhere], runs, {}, now=NOW, policy=POLICY)] == [Action.HEAL]


def test_adoptions_skip_young_terminating_and_recorded_claims() -> None:
    def claim(name: str, age: dt.timedelta, *, terminating: bool = False, ids: bool = True) -> ClaimInfo:
        return ClaimInfo(namespace="ns", name=name, uid=name, dag_id="d" if ids else None, run_id="r" if ids else None,
                         managed=True, terminating=terminating, created_at=NOW - age)
    p = pvc_name("d", "r")  # the name admission gives run (d, r): only such a claim is adopted
    claims = [claim(p, H), claim(p + "-young", dt.timedelta(seconds=5)),
              claim(p + "-dying", H, terminating=True), claim(p + "-known", H), claim(p + "-anon", H, ids=False)]
    out = {d.pvc_name: d.action for d in plan_adoptions(claims, {("ns", p + "-known")}, now=NOW, policy=POLICY)}
    assert out == {p: Action.ADOPT, p + "-anon": Action.KEEP}


@given(st.sampled_from(["success", "failed", "running", "queued", None]),
       st.one_of(st.none(), st.integers(min_value=-100, max_value=100)),
       st.integers(min_value=0, max_value=200))
def test_a_reclaim_is_only_ever_planned_by_the_rules(state: str | None, ended_h: int | None, age_h: int) -> None:
    end = NOW - ended_h * H if ended_h is not None else None
    d = decide(vol(created=NOW - age_h * H - dt.timedelta(minutes=5)), RunState(state, end), True, now=NOW,
               policy=POLICY)
    if d.action is Action.RECLAIM:
        assert state == "success" or (state == "failed" and end is not None and NOW - end >= 24 * H)
    else:
        assert not (state == "success" or (state == "failed" and end is not None and NOW - end >= 24 * H))


def test_summary_and_exit_code() -> None:
    d = decide(vol(), RunState("success", NOW), True, now=NOW, policy=POLICY)
    results = [Result(d, Outcome.RECLAIMED), Result(d, Outcome.FAILED, "boom")]
    s = summary(results, kept=3, duration=1.23456, dry_run=False)
    assert s["reclaimed"] == {"run_succeeded": 1} and s["kept"] == 3 and s["failed"] == 1 and s["duration_s"] == 1.235
    assert exit_code(results) == 1 and exit_code(results[:1]) == 0


def test_strays_whose_identity_cannot_be_recorded_are_left_alone() -> None:
    import datetime as dt

    from gc_job.plan import Action, GcPolicy, plan_adoptions
    from shared.objects import ClaimInfo

    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    policy = GcPolicy(failed_ttl=dt.timedelta(hours=24), success_states=("success",), failed_states=("failed",),
                      adopt_min_age=dt.timedelta(0))

    def claim(name: str, dag: str, run: str) -> ClaimInfo:
        return ClaimInfo(namespace="ns", name=name, uid="u", dag_id=dag, run_id=run, managed=True,
                         terminating=False, created_at=now - dt.timedelta(hours=1))

    decisions = plan_adoptions([
        claim("leoflow-staging-a-b-0123456789", "d" * 300, "r"),
        claim("leoflow-staging-a-b-0123456780", "d", "bad\x00run"),
        claim("leoflow-staging-d-r-0000000000", "d", "r"),  # our labels, a name admission never gives
        claim(pvc_name("ok", "run"), "ok", "run"),
    ], set(), now=now, policy=policy)
    assert [d.action for d in decisions] == [Action.KEEP, Action.KEEP, Action.KEEP, Action.ADOPT]
    assert "dag_id annotation is longer than 250 characters" in decisions[0].why
    assert "run_id annotation contains control characters" in decisions[1].why
    assert "name is not the one admission gives that run" in decisions[2].why
    assert all(len(d.dag_id) <= 250 for d in decisions)


def test_only_fresh_reclaims_with_a_gc_reason_and_a_uid_are_batched() -> None:
    from dataclasses import replace

    from gc_job.executor import batchable

    fresh = decide(vol(), RunState("success", NOW), True, now=NOW, policy=POLICY)
    assert batchable(fresh)
    resumed = decide(vol(state=VolumeState.RECLAIMING, reason=DeleteReason.RUN_SUCCEEDED), RunState("success", NOW),
                     True, now=NOW, policy=POLICY)
    assert resumed.action is Action.RECLAIM and not batchable(resumed)  # resumes re-read the PVC one by one
    assert not batchable(decide(vol(), RunState("success", NOW), False, now=NOW, policy=POLICY))  # heal
    assert not batchable(decide(vol(), RunState("running", None), True, now=NOW, policy=POLICY))  # keep
    no_uid = replace(fresh, volume=replace(vol(), pvc_uid=None))
    assert not batchable(no_uid)  # the executor fails it alone, before any transition
    assert not batchable(replace(fresh, reason=DeleteReason.PVC_MISSING))
