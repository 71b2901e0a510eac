"""The webhook's transport against hostile or broken clients (real server over TLS, real apiserver).

- Stalled clients cannot stall admissions: a read that waits longer than LEOFLOW_STAGING_READ_TIMEOUT ends its
  connection (webhook.tls_connection), so connections that sent headers and half a body give their threads back.
- A malformed chunked body is the client's fault: HTTP 400, logged at WARNING at most, never a traceback.
- A review whose ``request`` is malformed but carries a uid is answered as an AdmissionReview echoing that uid.
- An admission's budget counts from its request's arrival, including the wait for a thread.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from kubernetes import client

from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from shared.db.migrate import upgrade
from tests.e2e.conftest import pod_dict, staging_pvc_of
from tests.support.pods import admission_review, task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e

STALLED = 24  # more than the webhook's 2 workers x 8 threads


def _stalled_client(webhook: WebhookProcess) -> ssl.SSLSocket:
    """A TLS connection that sent the headers of a POST /mutate and half of its body, then nothing."""
    raw = socket.create_connection(("127.0.0.1", webhook.port), timeout=30)
    tls = webhook.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
    tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000\r\n\r\n" + b"{" + b" " * 4999)
    return tls


@contextlib.contextmanager
def _stalled_clients(webhook: WebhookProcess, n: int) -> Iterator[list[ssl.SSLSocket]]:
    clients = [_stalled_client(webhook) for _ in range(n)]
    try:
        yield clients
    finally:
        for tls in clients:
            with contextlib.suppress(OSError):
                tls.close()


def _session(webhook: WebhookProcess) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(webhook.ca_file)
    return session


def test_stalled_clients_cannot_stall_admissions_or_probes(webhook: WebhookProcess, api: client.ApiClient,
                                                           core: client.CoreV1Api, namespace: str) -> None:
    """24 clients stalled mid-body (every thread of the replica, and more): /healthz still answers and a pod
    created through the apiserver is admitted with its volume (the apiserver's own 10 s timeout is the bound).
    Without the read timeout the stalled connections hold all 16 threads until their clients give up."""
    with _stalled_clients(webhook, STALLED) as clients:
        time.sleep(0.5)  # every stalled connection has reached a thread and is blocked in its body read
        started = time.monotonic()
        health = _session(webhook).get(webhook.url + "/healthz", timeout=20)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        pod = pod_dict(api, core.create_namespaced_pod(namespace, task_pod("stall", f"r-{uuid.uuid4().hex[:8]}")))
        assert staging_pvc_of(pod), "the pod was admitted without its staging volume"
        assert time.monotonic() - started < 20
        for tls in clients:  # every stalled connection was answered 400: its body ended short
            status, answer = _read_answer(tls)
            assert status == 400 and b"ended after 5000 of its 10000 bytes" in answer, answer[:200]


def _read_answer(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    """One response: its status and body (read until its Content-Length, or until the server closes)."""
    tls.settimeout(10)
    data = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        lengths = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        if sep and lengths and len(body) >= lengths[0]:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _raw_exchange(webhook: WebhookProcess, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` on a fresh TLS connection and read its answer."""
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=10) as raw, \
            webhook.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        return _read_answer(tls)


@pytest.mark.parametrize("body", [
    b"zz\r\n{}\r\n0\r\n\r\n",  # a chunk size that is not hexadecimal
    b"2\r\n{}XX0\r\n\r\n",  # a chunk without its CRLF terminator
])
def test_a_malformed_chunked_body_is_a_400_and_no_error_in_the_log(webhook: WebhookProcess, body: bytes) -> None:
    log = webhook.workdir / "webhook.log"
    before = log.stat().st_size
    status, answer = _raw_exchange(webhook, b"POST /mutate HTTP/1.1\r\nHost: webhook\r\n"
                                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert status == 400, answer
    assert "could not be read" in json.loads(answer)["error"]
    time.sleep(0.2)  # the log line is written by the worker right after the answer
    with log.open("rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written and '"level": "error"' not in written and "[ERROR]" not in written, written
    assert "unreadable request body" in written


def test_a_malformed_request_with_a_uid_is_answered_as_a_review_echoing_it(webhook: WebhookProcess) -> None:
    review = admission_review(task_pod("etl", "r"), "default", uid="7f0c6c1e-uid-to-echo")
    review["request"]["operation"] = "TELEPORT"
    r = _session(webhook).post(webhook.url + "/mutate", json=review, timeout=10)
    assert r.status_code == 400
    answer = r.json()
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert answer["response"]["uid"] == "7f0c6c1e-uid-to-echo"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert "request.operation" in answer["response"]["status"]["message"]
    no_uid = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}}
    r = _session(webhook).post(webhook.url + "/mutate", json=no_uid, timeout=10)
    assert r.status_code == 400 and "request.uid" in r.json()["error"]


@pytest.fixture
def one_thread(control_plane: ControlPlane, postgres: Postgres, rwx_class: str,
               tmp_path: Path) -> Iterator[tuple[WebhookProcess, sa.Engine]]:
    """A webhook with one worker of one thread, its own database, a 3.5 s budget and a 2 s database timeout."""
    url = postgres.create_database(f"queue_{uuid.uuid4().hex[:8]}")
    engine = sa.create_engine(url)
    upgrade(engine)
    proc = WebhookProcess(workdir=tmp_path, env={
        "LEOFLOW_STAGING_DATABASE_URL": url,
        "LEOFLOW_STAGING_KUBECONFIG": str(control_plane.kubeconfig_path),
        "LEOFLOW_STAGING_INSTANCE": f"q-{uuid.uuid4().hex[:8]}",
        "LEOFLOW_STAGING_WORKERS": "1", "LEOFLOW_STAGING_THREADS": "1",
        "LEOFLOW_STAGING_REQUEST_BUDGET": "3.5", "LEOFLOW_STAGING_DB_TIMEOUT": "2",
        "LEOFLOW_STAGING_KUBE_TIMEOUT": "1", "LEOFLOW_STAGING_DEFAULT_SIZE": "1Gi",
    })
    proc.start()
    try:
        yield proc, engine
    finally:
        proc.stop()
        engine.dispose()


def _post(tls: ssl.SSLSocket, review: dict[str, object]) -> None:
    body = json.dumps(review).encode()
    tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def test_the_budget_counts_the_wait_for_a_thread(one_thread: tuple[WebhookProcess, sa.Engine],
                                                  namespace: str) -> None:
    """With every thread busy, a request waits in gunicorn's queue before anything reads it. Its budget counts from
    its arrival (the kernel's TCP_INFO), so a request that waited most of its budget away is refused at once
    ("ran out of time") instead of starting work whose answer would come after the apiserver gave up. Here the one
    thread is held for the 2 s database timeout by a row lock; the second request, queued behind it, has 3.5 - ~1.7
    s left, less than its first step's worst case (3 s). Counted from the handler's start (today's main) it would
    have had the full 3.5 s, started its read, and waited another 2 s on the lock."""
    server, engine = one_thread
    run = f"r-{uuid.uuid4().hex[:8]}"
    warm = _session(server).post(server.url + "/mutate", timeout=20,
                                 json=admission_review(task_pod("queue", run), namespace, uid="cold"))
    assert warm.json()["response"]["allowed"], warm.json()  # the run's claim and row exist
    connections = []
    for _ in range(2):  # kept-alive connections, as the apiserver's: a first request answered, then idle
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        tls = server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: webhook\r\n\r\n")
        assert _read_answer(tls)[0] == 200
        connections.append(tls)
    try:
        with engine.begin() as conn:  # holds the run's row: the warm path's FOR SHARE read waits for it
            conn.execute(sa.text("SELECT id FROM staging_volumes WHERE namespace = :ns FOR UPDATE"),
                         {"ns": namespace})
            _post(connections[0], admission_review(task_pod("queue", run), namespace, uid="first"))
            time.sleep(0.3)  # the first request holds the only thread
            _post(connections[1], admission_review(task_pod("queue", run), namespace, uid="second"))
            first, second = (_read_answer(tls) for tls in connections)
    finally:
        for tls in connections:
            tls.close()
    first_response = json.loads(first[1])["response"]
    assert (first_response["allowed"], first_response["status"]["code"]) == (False, 503)  # the lock's timeout
    second_response = json.loads(second[1])["response"]
    assert second_response["uid"] == "second" and second_response["allowed"] is False
    assert "ran out of time before reading staging_volumes" in second_response["status"]["message"]
    assert second_response["status"]["code"] == 504
    lines = [json.loads(line) for line in (server.workdir / "webhook.log").read_text().splitlines()
             if line.startswith("{") and '"uid": "second"' in line]
    assert lines and lines[0]["waited_ms"] >= 1000, lines
