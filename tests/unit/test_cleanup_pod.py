"""The cleanup pod (pure): its manifest, and what a pod's status says (as the kubelet writes it)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gc_job.cleanup_pod import ROOT, State, manifest, pod_name, status_of
from shared import labels
from shared.volumes import VolumeRecord, VolumeState

ROW = VolumeRecord(id=42, namespace="team", pvc_name="leoflow-staging-etl-r-abc", pvc_uid="u-1", dag_id="etl",
                   run_id="r/1 ü", storage_class="nfs", size="1Ti", state=VolumeState.RECLAIMING,
                   created_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC), shared_claim="team-staging")


def _terminated(code: int, message: str, phase: str) -> dict[str, Any]:
    return {"status": {"phase": phase, "containerStatuses": [
        {"name": "cleanup", "state": {"terminated": {"exitCode": code, "message": message, "reason": "Completed"}}}]}}


def test_the_manifest_mounts_the_whole_claim_and_names_the_run() -> None:
    pod = manifest(ROW, image="img:1", instance="prod", attempt=2)
    assert pod["metadata"]["name"] == pod_name(ROW, 2) and pod["metadata"]["name"].endswith("-2")
    assert len(pod["metadata"]["name"]) <= 63
    assert pod["metadata"]["labels"][labels.CLEANUP] == "42"
    assert pod["metadata"]["labels"][labels.INSTANCE] == "prod"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["volumes"] == [{"name": "shared", "persistentVolumeClaim": {"claimName": "team-staging"}}]
    [c] = spec["containers"]
    assert c["volumeMounts"] == [{"name": "shared", "mountPath": ROOT}] and "subPath" not in c["volumeMounts"][0]
    cmd = c["command"]
    assert f"--directory={ROW.pvc_name}" in cmd and "--run-id=r/1 ü" in cmd
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE", "FOWNER"]}


def test_statuses() -> None:
    assert status_of({"status": {"phase": "Pending"}}).state is State.RUNNING
    running = {"status": {"phase": "Pending", "containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert "ContainerCreating" in status_of(running).detail
    done = status_of(_terminated(0, json.dumps({"status": "removed", "bytes": 4096, "files": 3}), "Succeeded"))
    assert (done.state, done.bytes, done.files) == (State.REMOVED, 4096, 3)
    absent = status_of(_terminated(0, json.dumps({"status": "absent", "bytes": 0, "files": 0}), "Succeeded"))
    assert absent.state is State.REMOVED and absent.bytes == 0
    refused = status_of(_terminated(4, json.dumps({"status": "refused", "error": "marker names dag x"}), "Failed"))
    assert refused.state is State.REFUSED and "marker names dag x" in refused.detail
    failed = status_of(_terminated(5, json.dumps({"status": "failed", "error": "x: Permission denied"}), "Failed"))
    assert failed.state is State.FAILED and "Permission denied" in failed.detail  # the next attempt goes on
    killed = status_of({"status": {"phase": "Failed", "reason": "DeadlineExceeded"}})
    assert killed.state is State.FAILED and "DeadlineExceeded" in killed.detail
    oom = status_of(_terminated(137, "", "Failed"))
    assert oom.state is State.FAILED and "137" in oom.detail


@given(st.text(max_size=300), st.integers(min_value=-3, max_value=300), st.sampled_from(["Succeeded", "Failed"]))
def test_any_termination_message_reads_as_a_state_and_never_as_removed_unless_it_says_so(
        message: str, code: int, phase: str) -> None:
    status = status_of(_terminated(code, message, phase))
    if status.state is State.REMOVED:
        assert code == 0 and json.loads(message.strip().splitlines()[-1])["status"] in ("removed", "absent")


def test_the_chart_given_resources_replace_the_defaults() -> None:
    resources = {"limits": {"memory": "1Gi"}}
    [c] = manifest(ROW, image="img:1", instance="prod", attempt=0, resources=resources)["spec"]["containers"]
    assert c["resources"] == resources
