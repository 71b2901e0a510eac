"""Smoke tests proving the control plane is real: API objects persist, controllers run."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from devenv.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


def test_version_reports_the_built_release(control_plane: ControlPlane, assets: Path) -> None:
    status, body = control_plane.get("/version")
    assert status == 200
    version = json.loads(body)
    binary = subprocess.run([str(assets / "kube-apiserver"), "--version"],
                            capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"v1\.\d+\.\d+", version["gitVersion"]), version
    assert binary.split()[-1] == version["gitVersion"]
    assert (int(version["major"]), int(version["minor"])) >= (1, 35)
    assert version["gitVersion"] != "v0.0.0"


def test_rbac_is_enforced(control_plane: ControlPlane) -> None:
    status, body = control_plane.get("/api/v1/namespaces")  # admin: system:masters
    assert status == 200
    status, body = control_plane.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-admin")
    assert json.loads(body)["metadata"]["name"] == "cluster-admin"


def test_pvc_lifecycle_through_the_real_api(api: client.ApiClient) -> None:
    core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
    ns = f"smoke-{uuid.uuid4().hex[:8]}"
    sc = f"rwx-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    storage.create_storage_class(client.V1StorageClass(
        metadata=client.V1ObjectMeta(name=sc), provisioner="nfs.csi.k8s.io"))
    try:
        core.create_namespaced_persistent_volume_claim(ns, client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="data"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"], storage_class_name=sc,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))
        pvc = core.read_namespaced_persistent_volume_claim("data", ns)
        # The StorageObjectInUseProtection admission plugin adds the finalizer ...
        assert "kubernetes.io/pvc-protection" in (pvc.metadata.finalizers or [])
        core.delete_namespaced_persistent_volume_claim("data", ns)
        # ... and only kube-controller-manager's pvc-protection controller removes it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(ns).items]
            if "data" not in names:
                break
            time.sleep(0.2)
        else:
            pytest.fail("deleted PVC never disappeared: is kube-controller-manager running?")
    finally:
        storage.delete_storage_class(sc)
        core.delete_namespace(ns)
