"""Faults an operator meets on a real node, each with a message they can act on."""

from __future__ import annotations

import time
import uuid

from kubernetes import client

from devenv import provisioner
from devenv.cluster import CHART, NodeCluster


def test_unreachable_database_fails_the_install_clearly_and_installs_nothing(
        cluster: NodeCluster, core: client.CoreV1Api) -> None:
    ns = f"broken-{uuid.uuid4().hex[:6]}"
    release = "broken-leoflow-staging"
    cluster.kubectl("create", "namespace", ns)
    # A port nothing listens on, on this host: the connection is refused at once.
    cluster.kubectl("-n", ns, "create", "secret", "generic", "leoflow-db",
            f"--from-literal=url=postgresql://leoflow@{cluster.plane.node_ip}:1/leoflow")
    try:
        out = cluster.helm("install", release, str(CHART), "-n", ns, "--set", "database.existingSecret=leoflow-db",
                   *cluster.image_values(), "--wait", "--timeout", "4m", check=False)
        assert out.returncode != 0
        assert "pre-install" in out.stderr and "failed" in out.stderr, out.stderr
        # The failed hook Job stays for the operator to read; its log names the cause.
        logs = cluster.kubectl("-n", ns, "logs", f"job/{release}-migrate").stdout
        assert "leoflow-staging migrate" in logs and f"{cluster.plane.node_ip}:1" in logs, logs
        assert "refused" in logs.lower(), logs
        # Nothing that could refuse pods was installed: no webhook configuration, no Deployment.
        reg = client.AdmissionregistrationV1Api(cluster.api)
        assert [c.metadata.name for c in reg.list_mutating_webhook_configuration().items
                if c.metadata.name.startswith(release)] == []
        assert client.AppsV1Api(cluster.api).list_namespaced_deployment(ns).items == []
    finally:
        cluster.helm("uninstall", release, "-n", ns, "--wait", check=False)
        core.delete_namespace(ns)


def test_a_provisioner_that_is_down_shows_on_the_claim_and_the_pod(
        cluster: NodeCluster, core: client.CoreV1Api, namespace: str) -> None:
    apps = client.AppsV1Api(cluster.api)
    apps.patch_namespaced_deployment_scale("local-path-provisioner", provisioner.NAMESPACE,
                                           {"spec": {"replicas": 0}})
    try:
        deadline = time.monotonic() + 60
        while core.list_namespaced_pod(provisioner.NAMESPACE, label_selector="app=local-path-provisioner").items:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        core.create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": "waiting"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": provisioner.STORAGE_CLASS,
                     "resources": {"requests": {"storage": "1Gi"}}},
        })
        deadline = time.monotonic() + 60
        while True:
            events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=waiting").items
            messages = " ".join(e.message or "" for e in events)
            if "rancher.io/local-path" in messages:
                break
            assert time.monotonic() < deadline, messages
            time.sleep(0.5)
        assert core.read_namespaced_persistent_volume_claim("waiting", namespace).status.phase == "Pending"
    finally:
        apps.patch_namespaced_deployment_scale("local-path-provisioner", provisioner.NAMESPACE,
                                               {"spec": {"replicas": 1}})
    # Back up: the claim that waited binds.
    from tests.node.test_node import wait_bound

    wait_bound(core, namespace, "waiting", timeout=90)
