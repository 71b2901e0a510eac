"""The whole CREATE path through the real kube-apiserver calling the real `leoflow-staging serve`."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from kubernetes import client

from shared import labels
from shared.naming import label_safe, pvc_name
from tests.e2e.conftest import pod_dict, rows_for, staging_pvc_of, wait_until_gone
from tests.support.pods import admission_review, task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e

RUN = "manual__2026-05-23T10:00:00+00:00"


def _create(
    core: client.CoreV1Api, api: client.ApiClient, ns: str, body: dict[str, Any], **kw: object
) -> dict[str, Any]:
    return pod_dict(api, core.create_namespaced_pod(ns, body, **kw))


def _denial(core: client.CoreV1Api, ns: str, body: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_pod(ns, body)
    message: str = json.loads(info.value.body)["message"]
    return message


def test_opted_in_pod_gets_its_runs_volume(webhook: WebhookProcess, api: client.ApiClient,
                                           core: client.CoreV1Api, namespace: str, db: sa.Engine,
                                           rwx_class: str) -> None:
    body = task_pod("etl/daily", RUN, init_containers=[
        {"name": "fetch", "image": "leoflow/fetch:1"},
        {"name": "sidecar", "image": "leoflow/log:1", "restartPolicy": "Always"},  # native sidecar
    ], containers=[
        {"name": "task", "image": "leoflow/task:1", "env": [{"name": "OTHER", "value": "1"}]},
        {"name": "helper", "image": "leoflow/helper:1",
         "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
    ], volumes=[{"name": "scratch", "emptyDir": {}}])
    pod = _create(core, api, namespace, body)
    claim = pvc_name("etl/daily", RUN)
    assert staging_pvc_of(pod) == claim
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["leoflow-staging"]["persistentVolumeClaim"]["claimName"] == claim
    assert "scratch" in volumes
    for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        assert {"name": "leoflow-staging", "mountPath": "/staging"} in [
            {k: m[k] for k in ("name", "mountPath")} for m in c["volumeMounts"]], c["name"]
        envs = [e for e in c["env"] if e["name"] == "LEOFLOW_STAGING_DIR"]
        assert envs == [{"name": "LEOFLOW_STAGING_DIR", "value": "/staging"}], c["name"]
    assert {"name": "OTHER", "value": "1"} in pod["spec"]["containers"][0]["env"]

    pvc = pod_dict(api, core.read_namespaced_persistent_volume_claim(claim, namespace))
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == rwx_class
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "leoflow-staging", "leoflow.io/staging-instance": "default",
        labels.DAG_ID: label_safe("etl/daily"), labels.RUN_ID: label_safe(RUN)}
    assert pvc["metadata"]["annotations"][labels.RUN_ID] == RUN
    rows = rows_for(db, namespace)
    assert len(rows) == 1
    row = rows[0]
    assert (row["pvc_name"], row["pvc_uid"], row["state"]) == (claim, pvc["metadata"]["uid"], "active")
    assert (row["dag_id"], row["run_id"], row["storage_class"], row["size"]) == ("etl/daily", RUN, rwx_class, "5Gi")


def _metric(webhook: WebhookProcess, name: str) -> float:
    """A counter's value summed over all gunicorn workers (multiprocess mode)."""
    session = requests.Session()
    session.trust_env = False
    text = session.get(webhook.url + "/metrics", verify=str(webhook.ca_file), timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_pod_without_opt_in_is_unchanged(webhook: WebhookProcess, api: client.ApiClient,
                                         core: client.CoreV1Api, namespace: str, db: sa.Engine) -> None:
    pod = _create(core, api, namespace, task_pod("etl", "r1", opt_in=False))
    assert pod["spec"].get("volumes") is None
    assert staging_pvc_of(pod) is None
    assert core.list_namespaced_persistent_volume_claim(namespace).items == []
    assert rows_for(db, namespace) == []


def test_later_pods_and_retries_reattach_the_same_volume(webhook: WebhookProcess, api: client.ApiClient,
                                                         core: client.CoreV1Api, namespace: str,
                                                         db: sa.Engine) -> None:
    first = _create(core, api, namespace, task_pod("etl", RUN, annotations={labels.SIZE: "1Gi"}))
    second = _create(core, api, namespace, task_pod("etl", RUN))
    assert staging_pvc_of(first) == staging_pvc_of(second) == pvc_name("etl", RUN)
    assert len(core.list_namespaced_persistent_volume_claim(namespace).items) == 1
    assert len(rows_for(db, namespace)) == 1


def test_concurrent_pods_of_one_run_make_one_pvc_and_one_row(webhook: WebhookProcess, api: client.ApiClient,
                                                             core: client.CoreV1Api, namespace: str,
                                                             db: sa.Engine) -> None:
    before = _metric(webhook, "leoflow_staging_pvcs_created_total")

    def create(i: int) -> str | None:
        return staging_pvc_of(_create(core, api, namespace, task_pod("fanout", "run-1", name=f"task-{i}")))

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        names = list(pool.map(create, range(24)))
    assert set(names) == {pvc_name("fanout", "run-1")}
    assert len(core.list_namespaced_persistent_volume_claim(namespace).items) == 1
    rows = rows_for(db, namespace)
    assert [(r["state"], r["pvc_name"]) for r in rows] == [("active", pvc_name("fanout", "run-1"))]
    assert _metric(webhook, "leoflow_staging_pvcs_created_total") == before + 1  # one PVC create, 23 reuses


def test_runs_are_isolated(webhook: WebhookProcess, api: client.ApiClient, core: client.CoreV1Api,
                           namespace: str) -> None:
    a = _create(core, api, namespace, task_pod("etl", "run-a"))
    b = _create(core, api, namespace, task_pod("etl", "run-b"))
    assert staging_pvc_of(a) != staging_pvc_of(b)
    sneaky = task_pod("etl", "run-b", volumes=[
        {"name": "peek", "persistentVolumeClaim": {"claimName": staging_pvc_of(a)}}])
    message = _denial(core, namespace, sneaky)
    assert "another run's staging PVC" in message and str(staging_pvc_of(a)) in message


def test_conflicting_volume_name_is_denied_with_the_name(webhook: WebhookProcess, core: client.CoreV1Api,
                                                         namespace: str, db: sa.Engine) -> None:
    body = task_pod("etl", "r", volumes=[{"name": "leoflow-staging", "emptyDir": {}}])
    message = _denial(core, namespace, body)
    assert "already has a volume named 'leoflow-staging'" in message
    body = task_pod("etl", "r", containers=[{"name": "task", "image": "x", "volumeMounts": [
        {"name": "data", "mountPath": "/staging"}]}], volumes=[{"name": "data", "emptyDir": {}}])
    message = _denial(core, namespace, body)
    assert "container 'task' already mounts volume 'data' at /staging" in message
    assert rows_for(db, namespace) == []  # nothing created for a denied pod


def test_invalid_size_and_ids_are_denied(webhook: WebhookProcess, core: client.CoreV1Api, namespace: str) -> None:
    assert "over the configured maximum 100Gi" in _denial(
        core, namespace, task_pod("etl", "r", annotations={labels.SIZE: "2Ti"}))
    assert "is not a Kubernetes quantity" in _denial(
        core, namespace, task_pod("etl", "r", annotations={labels.SIZE: "lots"}))
    body = task_pod("etl", "r")
    del body["metadata"]["annotations"][labels.RUN_ID]
    del body["metadata"]["labels"][labels.RUN_ID]
    assert "has no leoflow.io/run-id annotation or label" in _denial(core, namespace, body)


def test_requested_class_must_exist(webhook: WebhookProcess, core: client.CoreV1Api, namespace: str) -> None:
    message = _denial(core, namespace, task_pod("etl", "r", annotations={labels.STORAGE_CLASS: "gold"}))
    assert "'gold'" in message and "does not exist" in message


def test_no_rwx_class_fails_fast_naming_the_classes(webhook: WebhookProcess, api: client.ApiClient,
                                                    core: client.CoreV1Api, namespace: str, rwx_class: str,
                                                    db: sa.Engine) -> None:
    storage = client.StorageV1Api(api)
    storage.create_storage_class({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                  "metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path"})
    storage.patch_storage_class(rwx_class, {"metadata": {"annotations": {labels.RWX_CLASS: "false"}}})
    try:
        message = _denial(core, namespace, task_pod("etl", "no-rwx"))
    finally:
        storage.patch_storage_class(rwx_class, {"metadata": {"annotations": {labels.RWX_CLASS: None}}})
        storage.delete_storage_class("local-path")
    assert "no ReadWriteMany StorageClass is available" in message
    assert "local-path (rancher.io/local-path)" in message and "leoflow.io/rwx=true" in message
    assert core.list_namespaced_persistent_volume_claim(namespace).items == []
    assert rows_for(db, namespace) == []


def test_dry_run_patches_but_creates_nothing(webhook: WebhookProcess, api: client.ApiClient,
                                             core: client.CoreV1Api, namespace: str, db: sa.Engine) -> None:
    pod = _create(core, api, namespace, task_pod("etl", "dry"), dry_run="All")
    assert staging_pvc_of(pod) == pvc_name("etl", "dry")
    assert core.list_namespaced_persistent_volume_claim(namespace).items == []
    assert rows_for(db, namespace) == []


def test_a_pvc_that_is_not_ours_is_never_adopted(webhook: WebhookProcess, core: client.CoreV1Api,
                                                 namespace: str, rwx_class: str, db: sa.Engine) -> None:
    name = pvc_name("etl", "squat")
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": rwx_class,
                                             "resources": {"requests": {"storage": "1Gi"}}}})
    message = _denial(core, namespace, task_pod("etl", "squat"))
    assert f"a PVC named '{name}' already exists" in message and "refusing to adopt" in message
    assert rows_for(db, namespace) == []


def test_terminating_pvc_and_reclaiming_row_deny_with_retry(webhook: WebhookProcess, api: client.ApiClient,
                                                           core: client.CoreV1Api, namespace: str,
                                                           db: sa.Engine) -> None:
    pod = _create(core, api, namespace, task_pod("etl", "gc-race"))
    claim = str(staging_pvc_of(pod))
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'reclaiming' WHERE namespace = :ns"),
                     {"ns": namespace})
    message = _denial(core, namespace, task_pod("etl", "gc-race"))
    assert "is being reclaimed" in message and "retry" in message
    # The GC finishes: the PVC is held Terminating by a finalizer, the row is closed.
    core.patch_namespaced_persistent_volume_claim(claim, namespace,
                                                  {"metadata": {"finalizers": ["test.leoflow.io/hold"]}})
    core.delete_namespaced_persistent_volume_claim(claim, namespace)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'deleted', deleted_at = now(), "
                             "delete_reason = 'run_succeeded' WHERE namespace = :ns"), {"ns": namespace})
    message = _denial(core, namespace, task_pod("etl", "gc-race"))
    assert "Terminating" in message and "retry" in message
    old_uid = core.read_namespaced_persistent_volume_claim(claim, namespace).metadata.uid
    # Once gone, a re-run gets a fresh PVC and a new row; never a pod pointing at the deleted claim.
    core.patch_namespaced_persistent_volume_claim(claim, namespace, {"metadata": {"finalizers": None}})
    wait_until_gone(core, namespace)
    _create(core, api, namespace, task_pod("etl", "gc-race"))
    fresh = core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert fresh.metadata.uid != old_uid
    rows = rows_for(db, namespace)
    assert [r["state"] for r in rows] == ["deleted", "active"]
    assert rows[1]["pvc_uid"] == fresh.metadata.uid


def test_a_pvc_deleted_behind_our_back_is_recreated(webhook: WebhookProcess, api: client.ApiClient,
                                                    core: client.CoreV1Api, namespace: str,
                                                    db: sa.Engine) -> None:
    claim = str(staging_pvc_of(_create(core, api, namespace, task_pod("etl", "lost"))))
    core.delete_namespaced_persistent_volume_claim(claim, namespace)
    wait_until_gone(core, namespace)
    _create(core, api, namespace, task_pod("etl", "lost"))
    rows = rows_for(db, namespace)
    assert [(r["state"], r["delete_reason"]) for r in rows] == [("deleted", "pvc_missing"), ("active", None)]
    assert rows[1]["pvc_uid"] == core.read_namespaced_persistent_volume_claim(claim, namespace).metadata.uid


def test_http_shell_rejects_bad_bodies_and_exposes_metrics(webhook: WebhookProcess) -> None:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override our CA
    session.verify = str(webhook.ca_file)
    r = session.post(webhook.url + "/mutate", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = session.post(webhook.url + "/mutate", json={"kind": "AdmissionReview", "apiVersion": "v1beta1"})
    assert r.status_code == 400 and "apiVersion" in r.json()["error"]
    r = session.post(webhook.url + "/mutate", data=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    conn = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=webhook.ssl_context(), timeout=10)
    conn.putrequest("POST", "/mutate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))
    conn.endheaders()  # the body is never sent: the cap is enforced from the header
    big = conn.getresponse()
    assert big.status == 413 and "larger than" in json.loads(big.read())["error"]
    conn.close()
    uid = str(uuid.uuid4())
    r = session.post(webhook.url + "/mutate", json={
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                    "operation": "CREATE", "namespace": "x", "object": {}}})
    assert r.status_code == 200
    assert r.json() == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": uid, "allowed": True}}
    # The webhook checks the opt-in itself: a pod without it passes unchanged even if a wrongly
    # configured selector sends it here.
    plain = admission_review(task_pod("etl", "r", opt_in=False), "default", uid=uid)
    r = session.post(webhook.url + "/mutate", json=plain)
    assert r.json()["response"] == {"uid": uid, "allowed": True}
    assert session.get(webhook.url + "/readyz").status_code == 200
    metrics = session.get(webhook.url + "/metrics").text
    assert 'leoflow_staging_admissions_total{outcome="allowed",reason="not_a_pod"}' in metrics
    assert "leoflow_staging_admission_duration_seconds_bucket" in metrics


def test_routes_answer_methods_heads_and_chunked_bodies(webhook: WebhookProcess) -> None:
    """Other methods get 405 with Allow, HEAD gets the headers only, a chunked body over the cap is refused (413,
    not cut at the cap and called invalid JSON), a small chunked body is read whole, other paths get 404."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(webhook.ca_file)
    r = session.get(webhook.url + "/mutate")
    assert (r.status_code, r.headers["Allow"]) == (405, "POST") and "not allowed" in r.json()["error"]
    r = session.delete(webhook.url + "/healthz")
    assert (r.status_code, set(r.headers["Allow"].split(", "))) == (405, {"GET", "HEAD"})
    r = session.get(webhook.url + "/healthz")
    assert (r.status_code, r.json(), r.headers["Content-Type"]) == (200, {"status": "ok"}, "application/json")
    head = session.head(webhook.url + "/healthz")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == r.headers["Content-Length"]
    assert session.get(webhook.url + "/healthz").status_code == 200  # the keep-alive connection is still sound

    def chunks(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 65536
            sent += 65536

    big = session.post(webhook.url + "/mutate", data=chunks(3 * 1024 * 1024 + 65536),
                       headers={"Content-Type": "application/json"})  # chunked: no Content-Length (cap: 3 MiB)
    assert big.status_code == 413 and "larger than" in big.json()["error"]
    small = session.post(webhook.url + "/mutate", headers={"Content-Type": "application/json; charset=utf-8"},
                         data=iter([b'{"kind": "AdmissionReview", ', b'"apiVersion": "admission.k8s.io/v1"}']))
    assert small.status_code == 400 and "request" in small.json()["error"]  # read whole, then refused
    missing = session.get(webhook.url + "/mutate/")
    assert missing.status_code == 404 and "error" in missing.json()
    assert session.get(webhook.url + "/readyz").json()["status"] == "ok"


def _read_response(tls: ssl.SSLSocket, pending: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response (Content-Length framed) from ``tls``; bytes past it stay in ``pending``."""
    while b"\r\n\r\n" not in pending:
        chunk = tls.recv(65536)
        assert chunk, "the server closed the connection"
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest) < length:
        chunk = tls.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    pending[:] = rest[length:]
    return int(head.split(b" ", 2)[1]), rest[:length]


def test_keep_alive_requests_are_answered_at_once_late_pipelined_and_on_many_connections(
        webhook: WebhookProcess) -> None:
    """Every request on one kept-alive connection is answered whether it comes at once, after the connection went
    back to gthread's poller, or pipelined behind another in one TLS write; and more connections than threads
    are all served."""
    review = json.dumps(admission_review(task_pod("etl", "r", opt_in=False), "default", uid=str(uuid.uuid4()))).encode()
    post = (b"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(review), review))
    get = b"GET /healthz HTTP/1.1\r\nHost: webhook\r\n\r\n"
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=10) as raw, \
            webhook.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        pending = bytearray()
        answers = []
        for pause in (0, 0, 0.2, 0, 0.2):  # 0.2 s: the connection is back in gthread's poller
            time.sleep(pause)
            tls.sendall(post)
            answers.append(_read_response(tls, pending))
        tls.sendall(post + get + post)  # pipelined: the next requests are read ahead with the first
        answers += [_read_response(tls, pending) for _ in range(3)]
        assert [status for status, _ in answers] == [200] * 8
        assert json.loads(answers[6][1]) == {"status": "ok"}
        assert all(json.loads(body)["response"]["allowed"] for i, (_, body) in enumerate(answers) if i != 6)
        assert not pending

    # 40 connections on 2 workers x 8 threads, each kept open until all 40 have been answered: a thread that
    # stayed on its connection until the client closes it would leave 24 of them unanswered.
    everyone_answered = threading.Barrier(40, timeout=30)

    def session_of_requests(_: int) -> list[int]:
        conn = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=webhook.ssl_context(), timeout=60)
        try:
            statuses = []
            for i in range(10):
                conn.request("POST", "/mutate", body=review, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
                if i == 0:
                    everyone_answered.wait()
            return statuses
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        assert list(pool.map(session_of_requests, range(40))) == [[200] * 10] * 40
