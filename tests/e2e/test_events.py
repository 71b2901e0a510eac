"""Kubernetes Events on staging PVCs, read back with kubectl from the real apiserver: created by the
webhook (cold path), kept and reclaimed by the GC; a dead apiserver never fails or slows either."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from kubernetes import client, config

from shared.claim_events import ClaimEvent, gc_events
from shared.kube import make_api_client
from shared.kube.events import EventRecorder
from shared.volumes import VolumeState
from tests.e2e.conftest import staging_pvc_of
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import set_run
from tests.support.pods import task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e
H = dt.timedelta(hours=1)


KUBECTL = shutil.which("kubectl")  # not installed by `make test`: where absent, the same query via the API


def _kubectl(kubeconfig: Path, *args: str) -> str:
    assert KUBECTL
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout


def _list(kubeconfig: Path, namespace: str, pvc: str) -> list[dict[str, Any]]:
    """``kubectl get events --field-selector involvedObject.name=<pvc>`` (core/v1 view of the events)."""
    if KUBECTL:
        items: list[dict[str, Any]] = json.loads(_kubectl(
            kubeconfig, "get", "events", "-n", namespace, "-o", "json",
            "--field-selector", f"involvedObject.name={pvc}"))["items"]
        return items
    api = config.new_client_from_config(config_file=str(kubeconfig))
    resp = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={pvc}",
                                                       _preload_content=False)
    found: list[dict[str, Any]] = json.loads(resp.data)["items"]  # type: ignore[attr-defined]
    return found


def _events(kubeconfig: Path, namespace: str, pvc: str, *, want: set[str], timeout: float = 15.0,
            ) -> list[dict[str, Any]]:
    """The PVC's events as kubectl lists them, once every reason in ``want`` is there."""
    deadline = time.monotonic() + timeout
    while True:
        items = _list(kubeconfig, namespace, pvc)
        if want <= {e["reason"] for e in items} or time.monotonic() > deadline:
            return list(items)
        time.sleep(0.2)


def test_admission_creates_an_event_and_the_inventory_shows_the_volume(
        webhook: WebhookProcess, core: client.CoreV1Api, api: client.ApiClient, kubeconfig: Path,
        namespace: str) -> None:
    pod = api.sanitize_for_serialization(core.create_namespaced_pod(namespace, task_pod("etl", "r-events")))
    pvc = staging_pvc_of(pod)
    assert pvc
    core.create_namespaced_pod(namespace, task_pod("etl", "r-events"))  # warm path: no second event
    [event] = _events(kubeconfig, namespace, pvc, want={"StagingVolumeCreated"})
    assert event["reason"] == "StagingVolumeCreated" and event["type"] == "Normal"
    assert event["reportingComponent"] == "leoflow-staging" and event["reportingInstance"]
    assert event["involvedObject"]["kind"] == "PersistentVolumeClaim"
    claim = core.read_namespaced_persistent_volume_claim(pvc, namespace)
    assert event["involvedObject"]["uid"] == claim.metadata.uid
    assert "run 'r-events' of DAG 'etl' by pod task-" in event["message"]

    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + 15
    series = f'leoflow_staging_volumes{{namespace="{namespace}",state="active",storage_class='
    while True:  # the inventory is cached a few seconds per worker
        text = session.get(webhook.url + "/metrics", verify=str(webhook.ca_file), timeout=10).text
        if series in text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "leoflow_staging_inventory_up 1.0" in text
    assert series in text
    assert "leoflow_staging_gc_last_success_timestamp_seconds" in text


def test_gc_events_kept_reclaim_started_held_and_describe(bench: Bench, core: client.CoreV1Api,
                                                          kubeconfig: Path) -> None:
    recorder = EventRecorder(make_api_client(str(kubeconfig)), instance="gc-test-pod")
    kept = bench.admit("etl", "bad")
    done = bench.admit("etl", "ok")
    set_run(bench.engine, "etl", "bad", "failed", T0 - 2 * H)
    core.create_namespaced_pod(bench.namespace, {  # a scheduled pod holds the claim (pvc-protection)
        "metadata": {"name": "holder"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": done}}]}})
    set_run(bench.engine, "etl", "ok", "success", T0)
    sweeper = bench.sweeper(settle=1.0, on_event=gc_events(recorder.emit))  # as `leoflow-staging gc` wires it
    assert sweeper.run() == 0
    assert sweeper.run() == 0  # the same facts again: no duplicate events
    assert recorder.flush(10)
    [k] = _events(kubeconfig, bench.namespace, kept, want={"KeptFailedRun"})
    assert k["reason"] == "KeptFailedRun" and f"failed at {(T0 - 2 * H).isoformat()}" in k["message"]
    held = _events(kubeconfig, bench.namespace, done, want={"ReclaimStarted", "ReclaimHeld"})
    assert sorted(e["reason"] for e in held) == ["ReclaimHeld", "ReclaimStarted"]
    assert any("reason run_succeeded" in e["message"] for e in held)
    assert any("held by pod(s) holder (Pending)" in e["message"] for e in held)
    if KUBECTL:
        described = _kubectl(kubeconfig, "describe", "pvc", "-n", bench.namespace, done)
        print(described)  # the on-call's view of a claim being reclaimed (pasted in the closing note)
        assert "Terminating" in described and "ReclaimStarted" in described and "ReclaimHeld" in described
    core.delete_namespaced_pod("holder", bench.namespace, grace_period_seconds=0)
    deadline = time.monotonic() + 30
    while any(c.metadata.name == done for c in core.list_namespaced_persistent_volume_claim(bench.namespace).items):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert sweeper.run() == 0
    assert {r.pvc_name: r.state for r in bench.rows()}[done] is VolumeState.DELETED


def test_a_dead_apiserver_never_slows_or_fails_a_sweep(bench: Bench) -> None:
    dead = client.Configuration()
    dead.host = "https://127.0.0.1:9"
    recorder = EventRecorder(client.ApiClient(dead), instance="x", capacity=8)
    started = time.monotonic()
    for i in range(100):  # beyond the capacity: dropped, never blocking
        recorder.emit(ClaimEvent("ns", f"p{i}", "KeptFailedRun", "Keep", "note", key=str(i)))
    assert time.monotonic() - started < 0.5
    assert recorder.flush(10)  # each post fails fast (connection refused), logged and swallowed
    bench.admit("etl", "bad")
    set_run(bench.engine, "etl", "bad", "failed", T0 - H)
    sweeper = bench.sweeper(on_event=gc_events(recorder.emit))
    assert sweeper.run() == 0
    assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE]


def test_close_ends_the_thread_and_counts_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    """The GC closes its recorder before it exits: whatever cannot be posted in time is dropped, the posting
    thread ends (none is left posting while the interpreter exits), and the drops are told in a few lines,
    not one per event."""
    caplog.set_level(logging.INFO, "leoflow_staging.events")
    with socket.socket() as hung:  # accepts TCP connections (backlog) and never answers: each post times out
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        cfg = client.Configuration()
        cfg.host = f"https://127.0.0.1:{hung.getsockname()[1]}"
        cfg.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0)  # as make_api_client
        recorder = EventRecorder(client.ApiClient(cfg), instance="x", timeout=0.3, capacity=8)
        for i in range(40):
            recorder.emit(ClaimEvent("ns", f"p{i}", "ReclaimStarted", "Reclaim", "note", key=str(i)))
        assert recorder.close(timeout=0.2) is False  # not everything was posted
        assert recorder._thread is not None and not recorder._thread.is_alive()
        recorder.emit(ClaimEvent("ns", "late", "ReclaimStarted", "Reclaim", "note", key="late"))
        assert recorder._thread is not None and not recorder._thread.is_alive()  # closed: no new thread
    fields = [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)]  # type: ignore[attr-defined]
    dropped = [f["dropped"] for f in fields if f["event"] == "event_dropped"]
    failed = [f for f in fields if f["event"] == "event_failed"]
    assert len(dropped) == 2  # the first drop at once, the rest at close (not 39 lines)
    assert sum(dropped) + len(failed) == 40 and len(failed) >= 1  # every event is posted, failed or counted
