"""Old names keep working (issue 16.3): the run's row, its patch and the GC's adoption accept the legacy name."""

from __future__ import annotations

import datetime as dt

import jsonpatch
from hypothesis import given
from hypothesis import strategies as st

from gc_job.plan import Action, GcPolicy, plan_adoptions
from shared.naming import candidate_pvc_names, id_problem, legacy_pvc_name, pvc_name
from shared.objects import ClaimInfo
from shared.volumes import VolumeRecord, VolumeState
from tests.support.pods import task_pod
from webhook.patching import plan_patch, plan_patch_for_names
from webhook.verdicts import Verdict
from webhook.volume_choice import choose_row

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
ids = st.text(min_size=1, max_size=40).filter(lambda v: id_problem(v) is None)  # ids admission accepts


def row(row_id: int, name: str, dag: str = "d", run: str = "r") -> VolumeRecord:
    return VolumeRecord(id=row_id, namespace="ns", pvc_name=name, pvc_uid=f"u{row_id}", dag_id=dag, run_id=run,
                        storage_class="nfs", size="1Gi", state=VolumeState.ACTIVE, created_at=NOW)


def test_a_run_keeps_its_legacy_row() -> None:
    current, legacy = candidate_pvc_names("d", "r")
    assert choose_row([row(7, legacy)], dag_id="d", run_id="r", current_name=current) == row(7, legacy)


def test_the_oldest_own_row_wins_when_both_names_are_recorded() -> None:
    current, legacy = candidate_pvc_names("d", "r")
    assert choose_row([row(9, current), row(4, legacy)], dag_id="d", run_id="r", current_name=current) == \
        row(4, legacy)


def test_no_row_means_a_new_volume() -> None:
    assert choose_row([], dag_id="d", run_id="r", current_name=pvc_name("d", "r")) is None


def test_another_runs_row_under_the_current_name_is_refused() -> None:
    current, _ = candidate_pvc_names("d", "r")
    verdict = choose_row([row(3, current, dag="other", run="x")], dag_id="d", run_id="r", current_name=current)
    assert isinstance(verdict, Verdict) and verdict.reason == "pvc_not_ours"
    assert "recorded for another run (dag_id 'other', run_id 'x')" in verdict.message


def test_another_runs_row_under_the_legacy_name_is_no_obstacle() -> None:
    # A legacy collision (40 bits): that volume is theirs; this run gets the current name.
    current, legacy = candidate_pvc_names("d", "r")
    assert choose_row([row(3, legacy, dag="other", run="x")], dag_id="d", run_id="r", current_name=current) is None


@given(st.lists(st.tuples(st.integers(1, 50), st.booleans(), st.sampled_from([("d", "r"), ("o", "x")])),
                max_size=6, unique_by=lambda t: t[0]))
def test_choose_row_never_hands_out_another_runs_row(spec: list[tuple[int, bool, tuple[str, str]]]) -> None:
    current, legacy = candidate_pvc_names("d", "r")
    rows = [row(i, current if is_current else legacy, dag=d, run=r) for i, is_current, (d, r) in spec]
    chosen = choose_row(rows, dag_id="d", run_id="r", current_name=current)
    own = [x for x in rows if (x.dag_id, x.run_id) == ("d", "r")]
    if own:
        assert isinstance(chosen, VolumeRecord) and chosen.id == min(x.id for x in own)
    elif any(x.pvc_name == current for x in rows):
        assert isinstance(chosen, Verdict) and chosen.reason == "pvc_not_ours"
    else:
        assert chosen is None


def test_a_pod_already_patched_with_its_legacy_claim_is_no_conflict() -> None:
    names = candidate_pvc_names("etl", "r")
    pod = jsonpatch.apply_patch(task_pod("etl", "r"), plan_patch(task_pod("etl", "r"), names[1]))
    assert isinstance(plan_patch(pod, names[0]), Verdict)  # the current name alone would call it another run's
    assert plan_patch_for_names(pod, names) == (names[1], [])  # reinvocation: nothing to add


def test_a_pod_naming_its_runs_legacy_claim_when_the_current_one_is_used_is_told_it_is_stale() -> None:
    current, legacy = candidate_pvc_names("etl", "r")
    for pod in (task_pod("etl", "r", volumes=[{"name": "x", "persistentVolumeClaim": {"claimName": legacy}}]),
                task_pod("etl", "r", annotations={"leoflow.io/staging-pvc": legacy})):
        verdict = plan_patch(pod, current, (current, legacy))
        assert isinstance(verdict, Verdict) and verdict.reason == "stale_pvc", verdict
        assert legacy in verdict.message and current in verdict.message and "another run" not in verdict.message
        alone = plan_patch(pod, current)  # without the run's names it cannot tell
        assert isinstance(alone, Verdict) and alone.reason == "other_runs_pvc"


def test_a_real_conflict_of_a_pod_naming_its_legacy_claim_is_answered_as_such() -> None:
    current, legacy = candidate_pvc_names("etl", "r")
    pod = task_pod("etl", "r", volumes=[{"name": "x", "persistentVolumeClaim": {"claimName": legacy}}])
    pod["spec"]["containers"][0]["env"] = [{"name": "LEOFLOW_STAGING_DIR", "value": "/x"}]
    verdict = plan_patch_for_names(pod, (current, legacy))
    assert isinstance(verdict, Verdict) and verdict.reason == "conflict", verdict


def test_a_pod_referencing_another_runs_claim_is_still_refused() -> None:
    other = legacy_pvc_name("etl", "other")
    pod = task_pod("etl", "r", volumes=[{"name": "x", "persistentVolumeClaim": {"claimName": other}}])
    verdict = plan_patch_for_names(pod, candidate_pvc_names("etl", "r"))
    assert isinstance(verdict, Verdict) and verdict.reason == "other_runs_pvc"


@given(ids, ids)
def test_the_gc_adopts_a_stray_under_either_name_and_no_other(dag: str, run: str) -> None:
    policy = GcPolicy(failed_ttl=dt.timedelta(hours=24), success_states=("success",), failed_states=("failed",),
                      adopt_min_age=dt.timedelta(0))

    def claim(name: str) -> ClaimInfo:
        return ClaimInfo(namespace="ns", name=name, uid=name, dag_id=dag, run_id=run, managed=True,
                         terminating=False, created_at=NOW - dt.timedelta(hours=1))

    current, legacy = candidate_pvc_names(dag, run)
    other = pvc_name(dag + "x", run)
    out = {d.pvc_name: d.action for d in plan_adoptions([claim(current), claim(legacy), claim(other)], set(),
                                                         now=NOW, policy=policy)}
    assert out[current] is Action.ADOPT and out[legacy] is Action.ADOPT
    assert out[other] is Action.KEEP
