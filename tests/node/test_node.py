"""The node itself: pods run, the provisioner binds ReadWriteMany claims, bytes cross pods, data goes away."""

from __future__ import annotations

import time
import uuid
from typing import Any

from kubernetes import client

from devenv import provisioner
from devenv.cluster import NodeCluster


def task_pod(name: str, image: str, script: str, claim: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "task", "image": image, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script]}],
    }
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def wait_phase(core: client.CoreV1Api, namespace: str, name: str, phases: set[str], *,
               timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases:
            return pod
        time.sleep(0.3)
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    raise AssertionError(f"pod {name} is {pod.status.phase}, not {phases}: "
                         + "; ".join(f"{e.reason}: {e.message}" for e in events))


def wait_bound(core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pvc = core.read_namespaced_persistent_volume_claim(name, namespace)
        if pvc.status.phase == "Bound":
            return pvc
        time.sleep(0.3)
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    raise AssertionError(f"claim {name} not Bound: " + "; ".join(f"{e.reason}: {e.message}" for e in events))


def test_node_is_ready_and_runs_a_pod(cluster: NodeCluster, core: client.CoreV1Api, namespace: str) -> None:
    node = core.list_node().items
    assert [n.metadata.name for n in node] == ["leoflow-node"]
    core.create_namespaced_pod(namespace, task_pod("hello", cluster.images["task"].ref, "echo hello from $(hostname)"))
    wait_phase(core, namespace, "hello", {"Succeeded"})
    logs = core.read_namespaced_pod_log("hello", namespace)
    assert logs.strip() == "hello from hello"


def test_pods_reach_services_but_nothing_beyond_this_machine(
        cluster: NodeCluster, core: client.CoreV1Api, namespace: str) -> None:
    # In-cluster config uses the `kubernetes` Service's ClusterIP; kube-proxy DNATs it to this host's apiserver.
    # An address outside (and a ClusterIP nobody serves) must not be reachable: the guard and the blackholes.
    probe = "echo | nc -w 2 {0} {1} >/dev/null 2>&1 && echo {2}=open || echo {2}=closed"
    script = "; ".join([probe.format("$KUBERNETES_SERVICE_HOST", 443, "kubernetes"),
                        probe.format("198.51.100.7", 80, "outside"),
                        probe.format("10.0.0.250", 80, "unserved")])
    pod = task_pod("net", cluster.images["task"].ref, script)
    pod["spec"]["enableServiceLinks"] = True
    core.create_namespaced_pod(namespace, pod)
    wait_phase(core, namespace, "net", {"Succeeded"})
    logs = core.read_namespaced_pod_log("net", namespace).split()
    assert logs == ["kubernetes=open", "outside=closed", "unserved=closed"]


def test_rwx_claim_binds_shares_bytes_and_is_deleted_with_its_data(
        cluster: NodeCluster, core: client.CoreV1Api, namespace: str) -> None:
    storage = client.StorageV1Api(cluster.api)
    sc = storage.read_storage_class(provisioner.STORAGE_CLASS)
    assert sc.metadata.annotations["leoflow.io/rwx"] == "true"
    claim = f"c-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": provisioner.STORAGE_CLASS,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })
    pvc = wait_bound(core, namespace, claim)
    pv = pvc.spec.volume_name
    image = cluster.images["task"].ref
    core.create_namespaced_pod(namespace, task_pod(
        "writer", image, "dd if=/dev/urandom of=/data/blob.tmp bs=1M count=8 2>/dev/null && mv /data/blob.tmp "
        "/data/blob && md5sum /data/blob > /data/blob.md5", claim))
    wait_phase(core, namespace, "writer", {"Succeeded"})
    core.create_namespaced_pod(namespace, task_pod("reader", image, "md5sum -c /data/blob.md5", claim))
    wait_phase(core, namespace, "reader", {"Succeeded"})
    assert "/data/blob: OK" in core.read_namespaced_pod_log("reader", namespace)
    folders = [p for p in cluster.data_dir.iterdir() if claim in p.name]
    assert len(folders) == 1 and (folders[0] / "blob").stat().st_size == 8 << 20
    for name in ("writer", "reader"):
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    core.delete_namespaced_persistent_volume_claim(claim, namespace)
    deadline = time.monotonic() + 60
    while folders[0].exists() or any(p.metadata.name == pv for p in core.list_persistent_volume().items):
        assert time.monotonic() < deadline, "the provisioner did not delete the volume and its folder"
        time.sleep(0.3)


def test_a_missing_image_says_so(cluster: NodeCluster, core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, task_pod("ghost", "leoflow.local/not-imported:1", "true"))
    deadline = time.monotonic() + 60
    while True:
        pod = core.read_namespaced_pod("ghost", namespace)
        waiting = [s.state.waiting for s in pod.status.container_statuses or [] if s.state.waiting]
        if waiting and waiting[0].reason == "ErrImageNeverPull":
            assert "not present" in waiting[0].message
            break
        assert time.monotonic() < deadline, f"no ErrImageNeverPull: {pod.status}"
        time.sleep(0.3)
    assert cluster.kubectl("-n", namespace, "get", "pod", "ghost").returncode == 0
