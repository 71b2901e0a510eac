"""Identity modes: where the raw run ids are read from (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.naming import pvc_name
from shared.settings import IDENTITIES
from tests.support.pods import task_pod
from webhook.identity import AIRFLOW, LEOFLOW, SOURCES
from webhook.intent import SizePolicy, StagingIntent, read_intent
from webhook.verdicts import Verdict

SIZES = SizePolicy(default="10Gi", maximum="1Ti")
RUN = "manual__2026-11-28T10:00:00.123456+00:00"


def airflow_pod(annotations: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The metadata of a KubernetesExecutor pod: raw ids in annotations, hashed ids in labels."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "etl-extract-abc", "annotations": annotations,
        "labels": {"leoflow.io/staging": "enabled", "airflow-worker": "1", "kubernetes_executor": "True",
                   **(labels or {})}},
        "spec": {"containers": [{"name": "base", "image": "apache/airflow:3.3.2"}]}}


def test_every_setting_value_has_a_source() -> None:
    assert set(SOURCES) == set(IDENTITIES)


def test_airflow_reads_the_raw_annotations() -> None:
    pod = airflow_pod({"dag_id": "etl", "run_id": RUN, "task_id": "extract", "try_number": "1"},
                      {"dag_id": "etl", "run_id": "manual__2026-11-28T1000000.123456-0000-4f1d2a3b5"})
    intent = read_intent(pod, SIZES, AIRFLOW)
    assert isinstance(intent, StagingIntent)
    assert (intent.dag_id, intent.run_id, intent.pvc_name) == ("etl", RUN, pvc_name("etl", RUN))


def test_airflow_never_takes_the_hashed_labels() -> None:
    # A KubernetesPodOperator pod: label-safe (hashed) ids only.
    pod = airflow_pod({}, {"dag_id": "etl", "run_id": "manual__2026-11-28T1000000-0000-9b1c2d3e4",
                           "kubernetes_pod_operator": "True"})
    verdict = read_intent(pod, SIZES, AIRFLOW)
    assert isinstance(verdict, Verdict) and not verdict.allowed and verdict.code == 422
    assert verdict.reason == "missing_id"
    assert "annotations dag_id and run_id" in verdict.message
    assert '{"dag_id": "{{ dag.dag_id }}", "run_id": "{{ run_id }}"}' in verdict.message
    assert "no dag_id annotation" in verdict.message


def test_airflow_missing_run_id_is_named() -> None:
    verdict = read_intent(airflow_pod({"dag_id": "etl"}), SIZES, AIRFLOW)
    assert isinstance(verdict, Verdict) and "no run_id annotation" in verdict.message


def test_leoflow_mode_ignores_airflow_keys_and_keeps_its_label_fallback() -> None:
    pod = airflow_pod({"dag_id": "etl", "run_id": RUN})
    verdict = read_intent(pod, SIZES, LEOFLOW)
    assert isinstance(verdict, Verdict) and "leoflow.io/dag-id annotation or label" in verdict.message
    pod["metadata"]["labels"].update({"leoflow.io/dag-id": "etl", "leoflow.io/run-id": "r1"})
    intent = read_intent(pod, SIZES, LEOFLOW)
    assert isinstance(intent, StagingIntent) and (intent.dag_id, intent.run_id) == ("etl", "r1")


def test_airflow_ids_are_validated_like_leoflow_ids() -> None:
    for bad in ("", "a\nb", "x" * 251):
        verdict = read_intent(airflow_pod({"dag_id": "etl", "run_id": bad}), SIZES, AIRFLOW)
        assert isinstance(verdict, Verdict) and verdict.reason == "invalid_id", repr(bad)
    verdict = read_intent(airflow_pod({"dag_id": 7, "run_id": RUN}), SIZES, AIRFLOW)
    assert isinstance(verdict, Verdict) and verdict.reason == "invalid_id"


@given(st.text(min_size=1, max_size=250), st.text(min_size=1, max_size=250))
def test_both_modes_name_the_same_claim_for_the_same_ids(dag: str, run: str) -> None:
    ours = read_intent(task_pod(dag, run), SIZES, LEOFLOW)
    theirs = read_intent(airflow_pod({"dag_id": dag, "run_id": run}), SIZES, AIRFLOW)
    if isinstance(ours, StagingIntent):
        assert isinstance(theirs, StagingIntent) and theirs.pvc_name == ours.pvc_name
    else:
        assert isinstance(theirs, Verdict) and theirs.reason == ours.reason
