"""Storage profiles and honest latencies against the real kube-apiserver, kube-controller-manager and PostgreSQL.

The webhook here is a real ``leoflow-staging serve`` (two gunicorn workers) registered with the apiserver for
namespaces labelled for it only. Its StorageClass ``slow-fs`` has no provisioner running (kube-controller-manager
says so in an ExternalProvisioning event) and an operator profile saying it ignores sizes and takes minutes. A
claim is bound for real by creating a PV whose claimRef names it: kube-controller-manager's PV binder binds it.
The session's control plane runs only a few controllers (devenv/controlplane.py), so this module starts a
second kube-controller-manager running only the PV binder, for its own duration.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re
import ssl
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from devenv.controlplane import ControlPlane
from devenv.processes import ManagedProcess, free_port
from devenv.webhook import TEST_WEBHOOK_LABEL
from shared import labels
from shared.naming import pvc_name
from tests.support.pods import task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e

LABEL = "profiles"
SLOW_CLASS = "slow-fs"
SLOW_PROVISIONER = "example.com/slow-fs"
PROFILES = {SLOW_PROVISIONER: {"rwx": True, "sizeEnforced": False, "provisioning": "minutes",
                               "source": "this test"}}
PENDING_AFTER = 4.0  # past the PV binder's first look at a new claim


@pytest.fixture(scope="module")
def slow_class(api: client.ApiClient) -> Iterator[str]:
    storage = client.StorageV1Api(api)
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": SLOW_CLASS}, "provisioner": SLOW_PROVISIONER})
    yield SLOW_CLASS
    storage.delete_storage_class(SLOW_CLASS)


@pytest.fixture(scope="module")
def pv_binder(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """kube-controller-manager with only persistentvolume-binder-controller (as the admin: a test's controller)."""
    work = tmp_path_factory.mktemp("pv-binder")
    config, port = str(control_plane.kubeconfig_path), free_port()
    proc = ManagedProcess("pv-binder", [
        str(control_plane.assets / "kube-controller-manager"), f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
        "--controllers=persistentvolume-binder-controller", "--leader-elect=false",
        f"--secure-port={port}", "--bind-address=127.0.0.1", f"--cert-dir={work / 'certs'}", "--v=1",
    ], work / "kube-controller-manager.log")
    proc.start()
    try:
        insecure = ssl.create_default_context()  # its self-signed serving cert; loopback only, no proxy
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=insecure))
        proc.wait_healthy(lambda: opener.open(f"https://127.0.0.1:{port}/healthz", timeout=2).status == 200,
                          timeout=60)
        yield
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(webhook_db: str, kubeconfig: Path, api: client.ApiClient, slow_class: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    proc = WebhookProcess(workdir=tmp_path_factory.mktemp("profiles-webhook"), env={
        "LEOFLOW_STAGING_DATABASE_URL": webhook_db, "LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig),
        "LEOFLOW_STAGING_DEFAULT_SIZE": "2Gi", "LEOFLOW_STAGING_WORKERS": "2",
        "LEOFLOW_STAGING_STORAGE_PROFILES": json.dumps(PROFILES),
        "LEOFLOW_STAGING_PENDING_EVENT_AFTER": f"{PENDING_AFTER:g}s",
    })
    proc.start()
    name = "leoflow-staging-profiles"
    proc.register(api, name, namespace_label=LABEL)
    try:
        yield proc
    finally:
        client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(name)
        proc.stop()


@pytest.fixture
def ns(core: client.CoreV1Api, server: WebhookProcess) -> Iterator[str]:
    name = f"t-prof-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {TEST_WEBHOOK_LABEL: LABEL}}})
    yield name
    core.delete_namespace(name)


def _slow_pod(run: str) -> dict[str, Any]:
    return task_pod("etl", run, annotations={labels.STORAGE_CLASS: SLOW_CLASS})


def _create(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Create a pod through the apiserver as kubectl does; its body and the response's Warning headers (what
    kubectl prints as ``Warning: ...``)."""
    resp: Any = core.create_namespaced_pod(namespace, pod, _preload_content=False)
    warnings = [m.group(1) for value in resp.headers.getlist("Warning")
                for m in re.finditer(r'299 - "((?:[^"\\]|\\.)*)"', value)]
    return json.loads(resp.data), warnings


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _eventually(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def _metric(server: WebhookProcess, series: str) -> float | None:
    with requests.Session() as http:
        http.trust_env = False
        text = http.get(server.url + "/metrics", verify=str(server.ca_file), timeout=30).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_admission_that_creates_the_claim_warns_and_the_warm_path_does_not(
        server: WebhookProcess, core: client.CoreV1Api, ns: str) -> None:
    pod, warnings = _create(core, ns, _slow_pod("warned"))
    assert pod["metadata"]["annotations"][labels.PVC] == pvc_name("etl", "warned")
    assert warnings == [
        f"leoflow-staging: class {SLOW_CLASS} ({SLOW_PROVISIONER}) ignores the requested size 2Gi",
        f"leoflow-staging: class {SLOW_CLASS} ({SLOW_PROVISIONER}) takes minutes to provision; the run's pods wait",
    ]
    assert all(len(w) <= 120 for w in warnings)
    _, again = _create(core, ns, _slow_pod("warned"))  # the claim exists: no new work, no warning
    assert again == []


def test_a_slow_claim_gets_its_event_and_its_provisioning_time_is_counted_once(
        server: WebhookProcess, pv_binder: None, core: client.CoreV1Api, ns: str) -> None:
    run, pvc = "latency", pvc_name("etl", "latency")
    series = f'leoflow_staging_claim_provisioning_seconds_count{{storage_class="{SLOW_CLASS}"}}'
    total_series = series.replace("_count", "_sum")
    before, sum_before = _metric(server, series) or 0.0, _metric(server, total_series) or 0.0
    # Several pods of the run at once, through both workers: one create wins, the others read the claim.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: _create(core, ns, _slow_pod(run)), range(4)))
    created = time.monotonic()
    claim = core.read_namespaced_persistent_volume_claim(pvc, ns)
    assert claim.status.phase == "Pending"  # no provisioner runs for this class

    def claim_event(reason: str) -> dict[str, Any] | None:
        resp: Any = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={pvc}",
                                               _preload_content=False)
        return next((e for e in json.loads(resp.data)["items"] if e["reason"] == reason), None)

    event = _eventually("the ProvisioningSlow event", lambda: claim_event("ProvisioningSlow"))
    assert time.monotonic() - created >= PENDING_AFTER - 0.5
    assert event["type"] == "Warning" and event["involvedObject"]["uid"] == claim.metadata.uid
    note = event["message"]
    assert f"class {SLOW_CLASS} (provisioner {SLOW_PROVISIONER})" in note
    # The PV binder's word (ExternalProvisioning) is named when it existed when the webhook read the claim's events.
    # Both sides are asynchronous on a loaded machine (kcm's broadcaster; our recorder posts later), so the times
    # compared are the server's: kcm's event's creation, and the read (the claim's creation plus the note's
    # seconds); all are whole seconds, hence the 2 s margin either side.
    theirs = _eventually("kcm's ExternalProvisioning event", lambda: claim_event("ExternalProvisioning"))
    existed = _when(theirs["metadata"]["creationTimestamp"])
    pending = re.search(r"still Pending (\d+)s", note)
    assert pending is not None, note
    read_at = claim.metadata.creation_timestamp + dt.timedelta(seconds=int(pending.group(1)))
    times = (theirs["metadata"]["creationTimestamp"], theirs.get("firstTimestamp"), read_at.isoformat(), note)
    if (read_at - existed).total_seconds() >= 2:
        assert "ExternalProvisioning" in note and SLOW_PROVISIONER in note.split("last event:")[1], times
    elif (existed - read_at).total_seconds() >= 2:
        assert note.endswith("no event from a provisioner yet (is one running for this class?)"), times
    else:
        assert "ExternalProvisioning" in note or "no event from a provisioner yet" in note, times
    assert _metric(server, series) in (None, before)  # Pending: nothing observed yet

    pv = f"pv-{uuid.uuid4().hex[:8]}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": SLOW_CLASS,
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{pv}"},
                 "claimRef": {"namespace": ns, "name": pvc, "uid": claim.metadata.uid}}})
    try:
        _eventually("the claim Bound", lambda: core.read_namespaced_persistent_volume_claim(pvc, ns).status.phase
                    == "Bound")
        bound_after = time.monotonic() - created
        _eventually("the provisioning time observed", lambda: _metric(server, series) == before + 1)
        seconds = (_metric(server, total_series) or 0.0) - sum_before
        # created -> Bound as the creating worker saw it: at least the Pending time we waited through, at most
        # what we measured from outside plus the watch's tick and latency.
        assert PENDING_AFTER <= seconds <= bound_after + 1.5, (seconds, bound_after)
        _create(core, ns, _slow_pod(run))  # the warm path adds nothing
        time.sleep(1.0)  # a second observation (another worker, a later look) would show by now
        assert _metric(server, series) == before + 1
    finally:
        core.delete_persistent_volume(pv)
