"""Kubernetes API faults: PVC create refused by a ResourceQuota or by RBAC; GC deletes refused.
A clear denial naming the cause, nothing recorded as active without its PVC, convergence after."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from kubernetes import client

from certs.issuance import KeyPair, issue_client
from devenv.controlplane import ControlPlane, kubeconfig
from tests.e2e.fault_support import FaultBench, admit, fault_bench, session_for
from tests.support.orchestrator import set_run
from tests.support.webhook import console_script

pytestmark = pytest.mark.e2e
__all__ = ["fault_bench"]


def _restricted_kubeconfig(plane: ControlPlane, api: client.ApiClient, user: str, rules: list[dict[str, object]],
                           path: Path) -> Path:
    """A kubeconfig for a client-certificate user bound to exactly ``rules`` (cluster-wide)."""
    pki = plane.workdir / "pki"
    ca = KeyPair((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    cert = issue_client(ca, common_name=user, now=dt.datetime.now(dt.UTC), validity=dt.timedelta(hours=1))
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role({"metadata": {"name": user}, "rules": rules})
    rbac.create_cluster_role_binding({"metadata": {"name": user}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    path.write_text(kubeconfig(server=plane.server, ca_pem=ca.cert_pem, client=cert, user=user))
    return path


def _rows(bench: FaultBench, namespace: str) -> list[tuple[str, str]]:
    engine = bench.engine()
    with engine.connect() as conn:
        rows = [(r.run_id, r.state) for r in conn.execute(sa.text(
            "SELECT run_id, state FROM staging_volumes WHERE namespace = :ns ORDER BY id"), {"ns": namespace})]
    engine.dispose()
    return rows


def test_quota_refusing_pvcs_is_a_clear_denial(fault_bench: FaultBench, namespace: str,
                                               core: client.CoreV1Api) -> None:
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pvcs"},
                                                      "spec": {"hard": {"persistentvolumeclaims": "0"}}})
    for _ in range(100):  # kube-controller-manager's resourcequota controller computes its status first
        if core.read_namespaced_resource_quota("no-pvcs", namespace).status.hard:
            break
        time.sleep(0.1)
    server = fault_bench.server("a")
    resp = admit(session_for(server), server, namespace, "etl", "quota")
    status = resp["status"]
    assert not resp["allowed"] and isinstance(status, dict) and status["code"] == 403
    assert "Kubernetes API refused" in status["message"] and "exceeded quota" in status["message"]
    assert _rows(fault_bench, namespace) == []


def test_rbac_refusing_pvc_create_is_a_clear_denial(fault_bench: FaultBench, namespace: str, api: client.ApiClient,
                                                    control_plane: ControlPlane, tmp_path: Path) -> None:
    user = f"no-create-{namespace}"
    cfg = _restricted_kubeconfig(control_plane, api, user, [
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]}], tmp_path / "kc")
    try:
        server = fault_bench.server("a", LEOFLOW_STAGING_KUBECONFIG=str(cfg))
        resp = admit(session_for(server), server, namespace, "etl", "rbac")
        status = resp["status"]
        assert not resp["allowed"] and isinstance(status, dict) and status["code"] == 403
        assert "forbidden" in status["message"] and user in status["message"]
        assert _rows(fault_bench, namespace) == []
    finally:
        client.RbacAuthorizationV1Api(api).delete_cluster_role(user)
        client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(user)


def test_gc_delete_refused_then_converges(fault_bench: FaultBench, namespace: str, api: client.ApiClient,
                                          control_plane: ControlPlane, kubeconfig: Path, tmp_path: Path,
                                          core: client.CoreV1Api) -> None:
    server = fault_bench.server("a")
    session = session_for(server)
    for run in ("a", "b"):
        assert admit(session, server, namespace, "etl", run)["allowed"]
    engine = fault_bench.engine()
    set_run(engine, "etl", "a", "success", dt.datetime.now(dt.UTC))
    set_run(engine, "etl", "b", "running")
    engine.dispose()
    user = f"gc-no-delete-{namespace}"
    cfg = _restricted_kubeconfig(control_plane, api, user, [
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}], tmp_path / "kc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update(LEOFLOW_STAGING_DATABASE_URL=fault_bench.db_url, LEOFLOW_STAGING_ADOPT_MIN_AGE="0s",
               LEOFLOW_STAGING_GC_SETTLE_SECONDS="10")
    try:
        refused = subprocess.run([console_script(), "gc"], env=env | {"LEOFLOW_STAGING_KUBECONFIG": str(cfg)},
                                 capture_output=True, text=True, timeout=60, check=False)
    finally:
        client.RbacAuthorizationV1Api(api).delete_cluster_role(user)
        client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(user)
    assert refused.returncode == 1, refused.stderr[-2000:]
    failed = [json.loads(line) for line in refused.stderr.splitlines() if '"event": "failed"' in line]
    assert len(failed) == 1 and failed[0]["run_id"] == "a" and "forbidden" in failed[0]["detail"]
    assert dict(_rows(fault_bench, namespace)) == {"a": "reclaiming", "b": "active"}  # nothing lost, nothing wrong
    ok = subprocess.run([console_script(), "gc"], env=env | {"LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig)},
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert dict(_rows(fault_bench, namespace)) == {"a": "deleted", "b": "active"}
    names = [p.metadata.annotations["leoflow.io/run-id"]
             for p in core.list_namespaced_persistent_volume_claim(namespace).items]
    assert names == ["b"]
