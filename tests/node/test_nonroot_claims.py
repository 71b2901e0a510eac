"""Non-root tasks in the claim-per-run mode on the real node: a class whose volumes are owned by root with mode
0755 (what NFS-like backends hand out; statically provisioned here, a hostPath PV bound to the run's claim by
kube-controller-manager's PV binder), the chart with ``storage.prepareClaims=true``, and two tasks of one run
running as uid 50000 and uid 1000 without fsGroup. The same run without the prepare step cannot write at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devenv.cluster import NodeCluster
from devenv.pods import task_pod
from shared import labels
from shared.naming import pvc_name
from shared.run_directory import MARKER
from tests.node.test_node import wait_bound, wait_phase

RELEASE = "nonroot-leoflow-staging"
NS = "leoflow-nonroot"
TENANT = "team-nonroot"
CLASS = "static-root-0755"


@pytest.fixture(scope="module")
def release(cluster: NodeCluster, core: client.CoreV1Api) -> Iterator[str]:
    assert cluster.postgres is not None
    cluster.postgres.create_database("node_nonroot")
    client.StorageV1Api(core.api_client).create_storage_class({
        "metadata": {"name": CLASS, "annotations": {labels.RWX_CLASS: "true"}},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"})
    core.create_namespace({"metadata": {"name": TENANT, "labels": {labels.INSTANCE: RELEASE}}})
    cluster.install_chart(release=RELEASE, namespace=NS, database="node_nonroot",
                          values=("--set", "gc.suspend=true", "--set", "config.defaultSize=1Gi",
                                  "--set", "storage.prepareClaims=true"))
    yield TENANT
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    core.delete_namespace(NS)
    core.delete_namespace(TENANT)
    client.StorageV1Api(core.api_client).delete_storage_class(CLASS)


def _volume_for(cluster: NodeCluster, core: client.CoreV1Api, claim: str) -> Path:
    """The "NFS export" the run's claim will bind to: root-owned, mode 0755."""
    assert cluster.node is not None
    root = cluster.node.workdir / f"nonroot-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    os.chmod(root, 0o755)
    core.create_persistent_volume({"metadata": {"name": root.name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": CLASS,
        "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(root), "type": "Directory"},
        "claimRef": {"namespace": TENANT, "name": claim}}})
    return root


def _run(cluster: NodeCluster, core: client.CoreV1Api, run: str, script: str, *, uid: int) -> tuple[Any, str]:
    pod = task_pod("etl", run, generate_name="nonroot-", annotations={labels.STORAGE_CLASS: CLASS}, containers=[{
        "name": "task", "image": cluster.images["task"].ref, "imagePullPolicy": "Never",
        "command": ["sh", "-c", script], "securityContext": {"runAsUser": uid, "runAsGroup": uid}}])
    pod["spec"]["enableServiceLinks"] = False
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    created = core.create_namespaced_pod(TENANT, pod)
    done = wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=180)
    logs = core.read_namespaced_pod_log(created.metadata.name, TENANT, container="task")
    return done, logs


def test_two_non_root_uids_of_one_run_hand_a_file_over_on_a_root_owned_0755_volume(
        cluster: NodeCluster, core: client.CoreV1Api, release: str) -> None:
    run = f"manual__{uuid.uuid4().hex[:6]}"
    claim = pvc_name("etl", run)
    root = _volume_for(cluster, core, claim)
    pod, out = _run(cluster, core, run, "cd $LEOFLOW_STAGING_DIR && echo from-50000 > handover && id -u && ls -a",
                    uid=50000)
    assert pod.status.phase == "Succeeded", out
    assert pod.spec.init_containers[0].name == labels.PREPARE_CONTAINER
    wait_bound(core, TENANT, claim)
    assert MARKER in out and (root / "handover").stat().st_uid == 50000
    assert root.stat().st_mode & 0o7777 == 0o1777 and root.stat().st_uid == 0
    pod, out = _run(cluster, core, run, "cd $LEOFLOW_STAGING_DIR && cat handover && echo from-1000 > reply", uid=1000)
    assert pod.status.phase == "Succeeded" and "from-50000" in out, out
    assert (root / "reply").read_text() == "from-1000\n"


def test_without_the_prepare_step_a_non_root_task_cannot_write_on_such_a_volume(
        cluster: NodeCluster, core: client.CoreV1Api, release: str) -> None:
    """The control: the same kind of volume given to a pod that is not opted in (no webhook, so no prepare step):
    uid 50000 cannot write. The test above is not passing because the volumes here are writable anyway."""
    assert cluster.node is not None
    root = cluster.node.workdir / f"control-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    os.chmod(root, 0o755)
    pod = task_pod("etl", "control", opt_in=False, generate_name="control-", volumes=[
        {"name": "v", "hostPath": {"path": str(root), "type": "Directory"}}], containers=[{
            "name": "task", "image": cluster.images["task"].ref, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo x > /v/x"], "securityContext": {"runAsUser": 50000, "runAsGroup": 50000},
            "volumeMounts": [{"name": "v", "mountPath": "/v"}]}])
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    created = core.create_namespaced_pod(TENANT, pod)
    done = wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=180)
    logs = core.read_namespaced_pod_log(created.metadata.name, TENANT)
    assert done.status.phase == "Failed" and "Permission denied" in logs, logs
