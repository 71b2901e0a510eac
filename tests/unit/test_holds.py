"""Holds as pure functions: the --for duration, the reason, the plan keeping held rows, the operator's rule."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gc_job.plan import Action, GcPolicy, decide, operator_verdict, recheck
from shared.holds import MAX_HOLD, HoldError, check_reason, describe_hold, parse_hold_for
from shared.volumes import DeleteReason, RunState, VolumeRecord, VolumeState

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
POLICY = GcPolicy(failed_ttl=24 * H, success_states=("success",), failed_states=("failed",))
STATES = st.one_of(st.none(), st.sampled_from(["success", "failed", "queued", "running", "cleared", "up_for_retry"]))


def vol(*, held_until: dt.datetime | None = None, state: VolumeState = VolumeState.ACTIVE) -> VolumeRecord:
    return VolumeRecord(id=1, namespace="ns", pvc_name="leoflow-staging-d-r-0123456789", pvc_uid="u", dag_id="d",
                        run_id="r", storage_class="nfs", size="1Gi", state=state, created_at=NOW - 48 * H,
                        held_until=held_until, hold_reason="debugging" if held_until else None,
                        held_by="ana@laptop" if held_until else None, held_at=NOW - H if held_until else None)


@pytest.mark.parametrize(("raw", "expected"), [
    ("72h", 72 * H), ("90m", dt.timedelta(minutes=90)), ("7d", 7 * 24 * H), ("45s", dt.timedelta(seconds=45)),
    (" 1.5h ", dt.timedelta(minutes=90)), ("365d", MAX_HOLD)])
def test_hold_durations(raw: str, expected: dt.timedelta) -> None:
    assert parse_hold_for(raw) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("abc", "expected a duration with a unit"), ("72", "expected a duration with a unit"),
    ("", "expected a duration with a unit"), ("-3h", "negative"), ("0h", "longer than 0"),
    ("366d", "at most 365d"), ("1h30m", "expected a duration with a unit"), ("3 weeks", "with a unit")])
def test_bad_hold_durations_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(HoldError, match=message) as info:
        parse_hold_for(raw)
    assert repr(raw) in str(info.value)


@given(st.integers(min_value=1, max_value=365 * 24), st.sampled_from(["h", "m", "s"]))
def test_every_positive_duration_in_range_parses_exactly(n: int, unit: str) -> None:
    assert parse_hold_for(f"{n}{unit}").total_seconds() == n * {"h": 3600, "m": 60, "s": 1}[unit]


@given(st.text(max_size=12))
def test_any_text_parses_to_a_bounded_positive_hold_or_a_hold_error(raw: str) -> None:
    try:
        length = parse_hold_for(raw)
    except HoldError as exc:
        assert str(exc).startswith("--for ")
    else:
        assert dt.timedelta(0) < length <= MAX_HOLD


def test_reasons() -> None:
    assert check_reason(None) is None and check_reason("  ") is None and check_reason(" why ") == "why"
    with pytest.raises(HoldError, match="at most 1000"):
        check_reason("x" * 1001)
    assert describe_hold(until=NOW, by="ana@laptop", reason="debugging") == \
        f"held until {NOW.isoformat()} by ana@laptop: debugging"
    assert describe_hold(until=NOW, by=None, reason=None) == f"held until {NOW.isoformat()}"


@given(run_state=STATES, ended=st.booleans(), left=st.integers(min_value=1, max_value=10**7))
def test_a_held_row_is_kept_whatever_its_run(run_state: str | None, ended: bool, left: int) -> None:
    run = None if run_state is None else RunState(run_state, NOW - 100 * H if ended else None)
    until = NOW + dt.timedelta(seconds=left)
    d = decide(vol(held_until=until), run, True, now=NOW, policy=POLICY)
    assert d.action is Action.KEEP and d.why == f"held until {until.isoformat()} by ana@laptop: debugging"


@given(run_state=STATES, ended=st.booleans(), ago=st.integers(min_value=0, max_value=10**7))
def test_an_ended_hold_changes_nothing(run_state: str | None, ended: bool, ago: int) -> None:
    run = None if run_state is None else RunState(run_state, NOW - 100 * H if ended else None)
    expired = decide(vol(held_until=NOW - dt.timedelta(seconds=ago)), run, True, now=NOW, policy=POLICY)
    never = decide(vol(), run, True, now=NOW, policy=POLICY)
    assert dataclasses.replace(expired, volume=None) == dataclasses.replace(never, volume=None)


def test_a_hold_does_not_stop_healing_or_a_reclaim_in_progress() -> None:
    held = vol(held_until=NOW + H)
    assert decide(held, RunState("success", NOW), False, now=NOW, policy=POLICY).action is Action.HEAL
    reclaiming = dataclasses.replace(held, state=VolumeState.RECLAIMING, delete_reason=DeleteReason.RUN_SUCCEEDED)
    assert decide(reclaiming, RunState("success", NOW), True, now=NOW, policy=POLICY).action is Action.RECLAIM


@given(run_state=STATES, ended=st.booleans())
def test_the_operator_may_reclaim_only_a_run_that_ended_or_is_gone(run_state: str | None, ended: bool) -> None:
    run = None if run_state is None else RunState(run_state, NOW - H if ended else None)
    verdict = operator_verdict(run, policy=POLICY)
    if run is None or run.state in ("success", "failed"):  # a failed run inside its TTL too
        assert verdict is DeleteReason.OPERATOR_REQUEST
    else:
        assert verdict == f"run is {run.state}"
    assert recheck(DeleteReason.OPERATOR_REQUEST, run, now=NOW, policy=POLICY) == verdict
