from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.naming import pvc_name
from tests.support.pods import task_pod
from webhook.intent import SizePolicy, StagingIntent, read_intent
from webhook.verdicts import Verdict

SIZES = SizePolicy(default="10Gi", maximum="1Ti")


def test_not_opted_in_is_none() -> None:
    assert read_intent(task_pod("d", "r", opt_in=False), SIZES) is None
    pod = task_pod("d", "r")
    pod["metadata"]["labels"]["leoflow.io/staging"] = "disabled"
    assert read_intent(pod, SIZES) is None


def test_annotation_is_the_truth_label_the_fallback() -> None:
    pod = task_pod("etl", "manual__2026-05-23T10:00:00+00:00")
    intent = read_intent(pod, SIZES)
    assert isinstance(intent, StagingIntent)
    assert intent.run_id == "manual__2026-05-23T10:00:00+00:00"
    del pod["metadata"]["annotations"]
    intent = read_intent(pod, SIZES)
    assert isinstance(intent, StagingIntent) and intent.run_id == pod["metadata"]["labels"]["leoflow.io/run-id"]


def test_size_default_annotation_and_bounds() -> None:
    intent = read_intent(task_pod("d", "r"), SIZES)
    assert isinstance(intent, StagingIntent) and intent.size == "10Gi"
    intent = read_intent(task_pod("d", "r", annotations={"leoflow.io/staging-size": "50Gi"}), SIZES)
    assert isinstance(intent, StagingIntent) and intent.size == "50Gi"
    for bad in ("2Ti", "0", "lots", "-1Gi"):
        verdict = read_intent(task_pod("d", "r", annotations={"leoflow.io/staging-size": bad}), SIZES)
        assert isinstance(verdict, Verdict) and verdict.code == 422, bad


def test_bad_ids_are_denied() -> None:
    for bad in ("", "   ", "a\nb", "x" * 251, "nul\x00"):
        verdict = read_intent(task_pod("d", bad), SIZES)
        assert isinstance(verdict, Verdict) and verdict.reason == "invalid_id", repr(bad)


@given(st.text(min_size=1, max_size=250), st.text(min_size=1, max_size=250))
def test_any_printable_ids_give_a_valid_intent_or_a_clear_denial(dag: str, run: str) -> None:
    result = read_intent(task_pod(dag, run), SIZES)
    if isinstance(result, StagingIntent):
        assert result.pvc_name == pvc_name(dag, run)
    else:
        assert isinstance(result, Verdict) and result.message.startswith("leoflow-staging: ")


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=3)), max_leaves=8)
OUR_KEYS = ["leoflow.io/staging", "leoflow.io/dag-id", "leoflow.io/run-id", "leoflow.io/staging-size",
            "leoflow.io/staging-storage-class"]


@given(st.dictionaries(st.sampled_from(OUR_KEYS), json_values), st.dictionaries(st.sampled_from(OUR_KEYS), json_values))
def test_any_json_in_our_labels_and_annotations_gives_an_intent_or_a_client_error(
        labels: dict[str, object], annotations: dict[str, object]) -> None:
    pod = task_pod("d", "r")
    pod["metadata"]["labels"].update(labels)
    pod["metadata"]["annotations"].update(annotations)
    result = read_intent(pod, SIZES)  # never raises, whatever types the values have
    if isinstance(result, Verdict):
        assert not result.allowed and 400 <= result.code < 500, result
        assert result.message.startswith("leoflow-staging: ")
    else:
        assert result is None or isinstance(result, StagingIntent)
