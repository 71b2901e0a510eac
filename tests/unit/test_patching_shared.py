"""Patch planning in the shared-claim mode: the run's directory by subPath, its label, the prepare init container
first; idempotent under reinvocation; a pod that brings its own mount of the shared claim is refused."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given
from hypothesis import strategies as st

from shared import labels
from tests.support.pods import task_pod
from webhook.patching import PREPARE_SECURITY, mount_plan, plan_patch
from webhook.verdicts import Verdict

SHARED = "team-staging"
DIRECTORY = "leoflow-staging-etl-r-0123456789"
MOUNT = mount_plan(name=DIRECTORY, shared=True, image="registry.local/leoflow-staging:1", dag_id="etl", run_id="r")


def _apply(pod: dict[str, Any]) -> dict[str, Any]:
    ops = plan_patch(pod, SHARED, MOUNT)
    assert not isinstance(ops, Verdict), ops
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    return patched


def _denied(pod: dict[str, Any]) -> Verdict:
    verdict = plan_patch(pod, SHARED, MOUNT)
    assert isinstance(verdict, Verdict) and not verdict.allowed
    return verdict


def test_every_container_mounts_the_runs_directory_and_the_prepare_container_runs_first() -> None:
    pod = _apply(task_pod("etl", "r", init_containers=[{"name": "fetch", "image": "f"}]))
    spec = pod["spec"]
    assert [v for v in spec["volumes"] if v["name"] == labels.VOLUME_NAME] == [
        {"name": labels.VOLUME_NAME, "persistentVolumeClaim": {"claimName": SHARED}}]
    first, *rest = spec["initContainers"]
    assert first["name"] == labels.PREPARE_CONTAINER and [c["name"] for c in rest] == ["fetch"]
    assert first["command"][:3] == ["leoflow-staging", "directory", "prepare"]
    assert first["securityContext"] == PREPARE_SECURITY and first["securityContext"]["runAsUser"] == 0
    for c in spec["initContainers"] + spec["containers"]:
        assert [m for m in c["volumeMounts"] if m["name"] == labels.VOLUME_NAME] == [
            {"name": labels.VOLUME_NAME, "mountPath": "/staging", "subPath": DIRECTORY}]
        assert {"name": labels.ENV_NAME, "value": "/staging"} in c["env"]
    assert pod["metadata"]["labels"][labels.DIRECTORY] == DIRECTORY
    assert pod["metadata"]["annotations"][labels.PVC] == SHARED


def test_reinvocation_yields_no_patch_even_after_the_apiserver_defaults_the_prepare_container() -> None:
    pod = _apply(task_pod("etl", "r"))
    defaulted = copy.deepcopy(pod)
    defaulted["spec"]["initContainers"][0].update(terminationMessagePath="/dev/termination-log",
                                                  terminationMessagePolicy="File")
    assert plan_patch(pod, SHARED, MOUNT) == []
    assert plan_patch(defaulted, SHARED, MOUNT) == []


def test_a_pod_mounting_the_shared_claim_itself_is_refused() -> None:
    pod = task_pod("etl", "r", volumes=[{"name": "all", "persistentVolumeClaim": {"claimName": SHARED}}])
    assert "mounts the namespace's shared staging claim" in _denied(pod).message


def test_another_runs_directory_or_a_whole_claim_mount_is_refused() -> None:
    other = {"name": labels.VOLUME_NAME, "mountPath": "/staging", "subPath": "leoflow-staging-etl-other-99"}
    pod = task_pod("etl", "r", volumes=[{"name": labels.VOLUME_NAME, "persistentVolumeClaim": {"claimName": SHARED}}],
                   containers=[{"name": "t", "image": "i", "volumeMounts": [other]}])
    assert _denied(pod).reason == "conflict"
    whole = {**other}
    whole.pop("subPath")
    pod["spec"]["containers"][0]["volumeMounts"] = [whole]
    assert _denied(pod).reason == "conflict"
    pod["spec"]["containers"][0]["volumeMounts"] = [{**other, "subPath": None, "subPathExpr": "$(X)"}]
    assert _denied(pod).reason == "conflict"


def test_a_preset_directory_label_of_another_run_or_a_foreign_prepare_container_is_refused() -> None:
    pod = task_pod("etl", "r")
    pod["metadata"].setdefault("labels", {})[labels.DIRECTORY] = "leoflow-staging-etl-other-99"
    assert _denied(pod).reason == "other_runs_pvc"
    pod = task_pod("etl", "r", init_containers=[{"name": labels.PREPARE_CONTAINER, "image": "evil"}])
    assert _denied(pod).reason == "conflict"


@given(st.lists(st.sampled_from(["plain", "init", "sidecar"]), min_size=0, max_size=4))
def test_any_mix_of_containers_is_patched_once(kinds: list[str]) -> None:
    inits = [{"name": f"i{n}", "image": "x", **({"restartPolicy": "Always"} if k == "sidecar" else {})}
             for n, k in enumerate(kinds) if k != "plain"]
    pod = task_pod("etl", "r", init_containers=inits or None)
    patched = _apply(pod)
    names = [c["name"] for c in patched["spec"]["initContainers"]]
    assert names[0] == labels.PREPARE_CONTAINER and names.count(labels.PREPARE_CONTAINER) == 1
    assert plan_patch(patched, SHARED, MOUNT) == []


def test_a_runs_own_claim_can_be_prepared_too_without_subpath_or_label() -> None:
    claim = DIRECTORY  # the run's own claim has the name its directory would have
    plan = mount_plan(name=claim, shared=False, image="img:1", dag_id="etl", run_id="-r")
    pod = task_pod("etl", "-r")
    ops = plan_patch(pod, claim, plan)
    assert not isinstance(ops, Verdict)
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    first = patched["spec"]["initContainers"][0]
    assert first["name"] == labels.PREPARE_CONTAINER and "--run-id=-r" in first["command"]
    for c in patched["spec"]["initContainers"] + patched["spec"]["containers"]:
        assert [m for m in c["volumeMounts"] if m["name"] == labels.VOLUME_NAME] == [
            {"name": labels.VOLUME_NAME, "mountPath": "/staging"}]
    assert labels.DIRECTORY not in patched["metadata"]["labels"]
    assert plan_patch(patched, claim, plan) == []
    assert plan_patch(patched, claim, None) == []  # the setting turned off later: the prepared pod is still fine
