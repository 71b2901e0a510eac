"""Patch planning: applied with a real RFC 6902 implementation, idempotent, conflict-aware."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given
from hypothesis import strategies as st

from tests.support.pods import task_pod
from webhook.patching import escape, plan_patch
from webhook.verdicts import Verdict

CLAIM = "leoflow-staging-etl-r-0123456789"


def _apply(pod: dict[str, Any]) -> dict[str, Any]:
    ops = plan_patch(pod, CLAIM)
    assert not isinstance(ops, Verdict), ops
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    return patched


def _check_patched(pod: dict[str, Any]) -> None:
    vols = [v for v in pod["spec"]["volumes"] if v["name"] == "leoflow-staging"]
    assert vols == [{"name": "leoflow-staging", "persistentVolumeClaim": {"claimName": CLAIM}}]
    for key in ("initContainers", "containers"):
        for c in pod["spec"].get(key, []):
            assert [m for m in c["volumeMounts"] if m["name"] == "leoflow-staging"] == [
                {"name": "leoflow-staging", "mountPath": "/staging"}]
            assert [e for e in c["env"] if e["name"] == "LEOFLOW_STAGING_DIR"] == [
                {"name": "LEOFLOW_STAGING_DIR", "value": "/staging"}]
    assert pod["metadata"]["annotations"]["leoflow.io/staging-pvc"] == CLAIM


def test_absent_arrays_are_added_whole() -> None:
    pod = task_pod("etl", "r")
    pod["metadata"].pop("annotations")
    ops = plan_patch(pod, CLAIM)
    assert isinstance(ops, list)
    paths = {op["path"] for op in ops}
    assert {"/spec/volumes", "/spec/containers/0/volumeMounts", "/spec/containers/0/env",
            "/metadata/annotations"} <= paths
    _check_patched(jsonpatch.apply_patch(pod, ops))


def test_existing_arrays_are_appended_and_key_escaped() -> None:
    pod = task_pod("etl", "r", volumes=[{"name": "x", "emptyDir": {}}], containers=[
        {"name": "t", "image": "i", "env": [{"name": "A", "value": "1"}],
         "volumeMounts": [{"name": "x", "mountPath": "/x"}]}])
    ops = plan_patch(pod, CLAIM)
    assert isinstance(ops, list)
    assert {"op": "add", "path": "/metadata/annotations/leoflow.io~1staging-pvc", "value": CLAIM} in ops
    assert {"op": "add", "path": "/spec/volumes/-",
            "value": {"name": "leoflow-staging", "persistentVolumeClaim": {"claimName": CLAIM}}} in ops
    _check_patched(jsonpatch.apply_patch(pod, ops))


def test_reinvocation_yields_no_patch() -> None:
    pod = task_pod("etl", "r", init_containers=[{"name": "side", "image": "s", "restartPolicy": "Always"}])
    assert plan_patch(_apply(pod), CLAIM) == []


def test_escape() -> None:
    assert escape("a/b~c") == "a~1b~0c"


def test_conflicts_and_isolation_are_denied() -> None:
    other = "leoflow-staging-etl-other-9999999999"
    cases = {
        "other_runs_pvc": task_pod("e", "r", volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": other}}]),
        "conflict": task_pod("e", "r", volumes=[{"name": "leoflow-staging", "emptyDir": {}}]),
    }
    env_clash = task_pod("e", "r", containers=[{"name": "t", "image": "i",
                                                "env": [{"name": "LEOFLOW_STAGING_DIR", "value": "/data"}]}])
    cases["conflict_env"] = env_clash
    annotated = task_pod("e", "r", annotations={"leoflow.io/staging-pvc": other})
    cases["annotation"] = annotated
    for name, pod in cases.items():
        verdict = plan_patch(pod, CLAIM)
        assert isinstance(verdict, Verdict) and not verdict.allowed, name


def test_malformed_shapes_are_denied_not_crashing() -> None:
    specs: list[Any] = [{"containers": "x"}, {"containers": [1]}, {"volumes": {}}, None]
    for spec in specs:
        pod = {"metadata": {}, "spec": spec}
        verdict = plan_patch(pod, CLAIM)
        assert isinstance(verdict, Verdict) and verdict.code == 400


names = st.text(alphabet="abcdefgh-", min_size=1, max_size=8)
container = st.fixed_dictionaries(
    {"name": names, "image": st.just("img")},
    optional={
        "env": st.lists(st.fixed_dictionaries({"name": names, "value": names}), max_size=3),
        "volumeMounts": st.lists(st.fixed_dictionaries({"name": names, "mountPath": names.map(lambda s: "/" + s)}),
                                 max_size=3),
        "restartPolicy": st.just("Always"),
    },
)


@given(st.lists(container, min_size=1, max_size=4), st.lists(container, max_size=3),
       st.booleans(), st.booleans())
def test_any_plain_pod_is_patched_completely_and_idempotently(
    containers: list[dict[str, Any]], inits: list[dict[str, Any]], with_volumes: bool, with_annotations: bool,
) -> None:
    pod: dict[str, Any] = {"metadata": {}, "spec": {"containers": containers}}
    if inits:
        pod["spec"]["initContainers"] = inits
    if with_volumes:
        pod["spec"]["volumes"] = [{"name": "cache", "emptyDir": {}}]
    if with_annotations:
        pod["metadata"]["annotations"] = {"a": "b"}
    original = copy.deepcopy(pod)
    patched = _apply(pod)
    assert pod == original  # planning never mutates its input
    _check_patched(patched)
    assert plan_patch(patched, CLAIM) == []
