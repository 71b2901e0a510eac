"""The webhook's watch-fed caches against the real apiserver, kube-controller-manager and PostgreSQL.

The watches decide what the cache may answer; anything they cannot show fresh is read directly.
Reviews are POSTed to the webhook directly (its own installation and database), so no
registration is shared with the other tests. Waits are bounded waits for eventual conditions only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from kubernetes import client

from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from shared import labels
from shared.db.migrate import upgrade
from shared.naming import pvc_name
from tests.e2e.conftest import wait_until_gone
from tests.support.pods import admission_review, task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e

INSTANCE = "watch-e2e"


@pytest.fixture(scope="module")
def server(control_plane: ControlPlane, postgres: Postgres, rwx_class: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    url = postgres.create_database(f"watch_{uuid.uuid4().hex[:8]}")
    engine = sa.create_engine(url)
    upgrade(engine)
    engine.dispose()
    proc = WebhookProcess(workdir=tmp_path_factory.mktemp("watch-webhook"), env={
        "LEOFLOW_STAGING_DATABASE_URL": url,
        "LEOFLOW_STAGING_KUBECONFIG": str(control_plane.kubeconfig_path),
        "LEOFLOW_STAGING_INSTANCE": INSTANCE,
        "LEOFLOW_STAGING_WATCH_STALE_SECONDS": "1",
        "LEOFLOW_STAGING_WORKERS": "1",  # one process, so /readyz shows the cache the admissions read
        "LEOFLOW_STAGING_MAX_SIZE": "10Gi",
        "LEOFLOW_STAGING_DEFAULT_SIZE": "1Gi",
    })
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def http(server: WebhookProcess) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(server.ca_file)
    yield session
    session.close()


def _admit(http: requests.Session, server: WebhookProcess, namespace: str, dag: str, run: str,
           **pod_kw: Any) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    resp = http.post(server.url + "/mutate", timeout=30,
                     json=admission_review(task_pod(dag, run, **pod_kw), namespace, uid=uid))
    resp.raise_for_status()
    response: dict[str, Any] = resp.json()["response"]
    assert response["uid"] == uid
    return response


def _ready(http: requests.Session, server: WebhookProcess) -> tuple[int, dict[str, Any]]:
    resp = http.get(server.url + "/readyz", timeout=30)
    body: dict[str, Any] = resp.json()
    return resp.status_code, body


def _eventually(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f}s: {what}")
        time.sleep(0.05)


def _pvc_cache(http: requests.Session, server: WebhookProcess) -> dict[str, Any]:
    cache: dict[str, Any] = _ready(http, server)[1]["caches"]["pvcs"]
    return cache


def _seen(http: requests.Session, server: WebhookProcess, version: str) -> Callable[[], bool]:
    """The PVC cache has folded in every change up to ``version`` (etcd's revisions are ordered)."""
    return lambda: int(_pvc_cache(http, server)["version"] or 0) >= int(version)


def _hold(core: client.CoreV1Api, namespace: str, claim: str) -> None:
    """A scheduled pod naming the claim: pvc-protection keeps a deleted claim Terminating while it exists."""
    core.create_namespaced_pod(namespace, {"metadata": {"name": "holder"}, "spec": {
        "nodeName": "node-1", "containers": [{"name": "c", "image": "x"}],
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}})


def _delete_held(core: client.CoreV1Api, namespace: str, claim: str) -> str:
    """Delete the claim out of band; returns the resourceVersion of its Terminating state."""
    core.delete_namespaced_persistent_volume_claim(claim, namespace)
    pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert pvc.metadata.deletion_timestamp and "kubernetes.io/pvc-protection" in pvc.metadata.finalizers
    return str(pvc.metadata.resource_version)


def test_a_claim_deleted_by_hand_is_denied_at_once_then_replaced(
        server: WebhookProcess, http: requests.Session, core: client.CoreV1Api, namespace: str) -> None:
    _eventually("the caches synced", lambda: _ready(http, server)[0] == 200)
    first = _admit(http, server, namespace, "etl", "held")
    assert first["allowed"] and first.get("patch")
    claim = pvc_name("etl", "held")
    old_uid = core.read_namespaced_persistent_volume_claim(claim, namespace).metadata.uid
    assert _admit(http, server, namespace, "etl", "held")["allowed"]  # warm: from the cache
    _hold(core, namespace, claim)

    version = _delete_held(core, namespace, claim)
    _eventually("the watch delivered the delete", _seen(http, server, version))
    denied = _admit(http, server, namespace, "etl", "held")
    assert not denied["allowed"] and denied["status"]["code"] == 409
    assert "Terminating" in denied["status"]["message"] and "retry" in denied["status"]["message"]

    core.delete_namespaced_pod("holder", namespace, grace_period_seconds=0)
    wait_until_gone(core, namespace)
    _eventually("the deleted claim left the cache", lambda: _pvc_cache(http, server)["objects"] == 0)
    again = _admit(http, server, namespace, "etl", "held")
    assert again["allowed"] and again.get("patch")
    fresh = core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert fresh.metadata.uid != old_uid and fresh.metadata.deletion_timestamp is None


def test_a_storage_class_created_is_usable_at_once(server: WebhookProcess, http: requests.Session,
                                                   api: client.ApiClient, core: client.CoreV1Api,
                                                   namespace: str) -> None:
    _eventually("the caches synced", lambda: _ready(http, server)[0] == 200)
    storage = client.StorageV1Api(api)
    name = f"new-{uuid.uuid4().hex[:8]}"
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": name}, "provisioner": "nfs.csi.k8s.io"})
    try:
        response = _admit(http, server, namespace, "etl", "new-class", annotations={labels.STORAGE_CLASS: name})
        assert response["allowed"], response
        claim = core.read_namespaced_persistent_volume_claim(pvc_name("etl", "new-class"), namespace)
        assert claim.spec.storage_class_name == name
    finally:
        storage.delete_storage_class(name)


def test_the_cache_holds_only_live_claims(server: WebhookProcess, http: requests.Session,
                                          core: client.CoreV1Api, namespace: str) -> None:
    _eventually("the caches synced", lambda: _ready(http, server)[0] == 200)
    before = _pvc_cache(http, server)["objects"]
    for i in range(12):
        assert _admit(http, server, namespace, "etl", f"many-{i}")["allowed"]
    _eventually("12 claims cached", lambda: _pvc_cache(http, server)["objects"] == before + 12)
    core.delete_collection_namespaced_persistent_volume_claim(namespace)
    wait_until_gone(core, namespace)
    _eventually("deleted claims removed", lambda: _pvc_cache(http, server)["objects"] == before)
    metrics = http.get(server.url + "/metrics", timeout=30).text
    gauge = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
             if line.startswith('leoflow_staging_cache_objects{cache="pvcs"')]
    assert gauge == [before]  # one worker, one series: what /metrics shows operators


def test_apiserver_restart_no_admission_on_a_stale_cache_then_resync(
        server: WebhookProcess, http: requests.Session, control_plane: ControlPlane, api: client.ApiClient,
        namespace: str, tmp_path: Path) -> None:
    _eventually("the caches synced", lambda: _ready(http, server)[0] == 200)
    assert _admit(http, server, namespace, "etl", "restart")["allowed"]
    claim = pvc_name("etl", "restart")
    lists_before = _pvc_cache(http, server)["lists"]

    control_plane.stop_apiserver()
    try:
        _eventually("the caches report they are not fresh",
                    lambda: not _ready(http, server)[1]["caches"]["pvcs"]["fresh"])
        status, body = _ready(http, server)
        assert status == 503  # the direct StorageClass list of the readiness check fails
        assert "watch broken" in body["caches"]["pvcs"]["problem"]
        # The cache still holds the claim alive, but cannot show it is fresh: a direct read, which fails.
        during = _admit(http, server, namespace, "etl", "restart")
        assert not during["allowed"], during
        assert "retry" in during["status"]["message"].lower()
    finally:
        control_plane.start_apiserver()

    _eventually("the caches resynced", lambda: _ready(http, server)[0] == 200, timeout=60)
    core = client.CoreV1Api(client.ApiClient(api.configuration))  # fresh connections after the restart
    _hold(core, namespace, claim)
    version = _delete_held(core, namespace, claim)
    _eventually("the watch delivered the delete", _seen(http, server, version))
    denied = _admit(http, server, namespace, "etl", "restart")
    assert not denied["allowed"] and "Terminating" in denied["status"]["message"]
    cache = _pvc_cache(http, server)
    assert cache["fresh"] and cache["lists"] >= lists_before  # resumed from its version, or relisted
    core.delete_namespaced_pod("holder", namespace, grace_period_seconds=0)
    wait_until_gone(core, namespace)


def test_through_the_apiserver_a_class_created_then_a_pod_at_once(webhook: WebhookProcess, api: client.ApiClient,
                                                                  core: client.CoreV1Api, namespace: str) -> None:
    """The session's registered webhook (watch caches on, 2 workers): a real pod CREATE right after the class."""
    storage = client.StorageV1Api(api)
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": name}, "provisioner": "nfs.csi.k8s.io"})
    try:
        body = task_pod("etl", "via-api", annotations={labels.STORAGE_CLASS: name})
        pod = core.create_namespaced_pod(namespace, body)
        claim = pod.metadata.annotations[labels.PVC]
        assert core.read_namespaced_persistent_volume_claim(claim, namespace).spec.storage_class_name == name
    finally:
        storage.delete_storage_class(name)
