"""API throttling is "not now", never "no" (issue 16.2).

A small fault-injecting TLS proxy sits in front of the real kube-apiserver: every request passes
through to it, except the ones a test chooses, which get the apiserver's own 429 answer (a Status
body and Retry-After), as API priority and fairness sends under load.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import http.server
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certs.issuance import issue_ca, issue_serving
from devenv.controlplane import ControlPlane
from devenv.processes import free_port
from tests.e2e.fault_support import FaultBench, admit, fault_bench, session_for  # noqa: F401 - fixture

Rule = Callable[[str, str], bool]  # (method, path) -> throttle?


class ThrottlingProxy:
    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.throttle: Rule = lambda method, path: False
        self.throttled: list[str] = []
        now = dt.datetime.now(dt.UTC)
        ca = issue_ca(common_name="throttling-proxy-ca", now=now, validity=dt.timedelta(days=1))
        serving = issue_serving(ca, hosts=("127.0.0.1",), now=now, validity=dt.timedelta(days=1))
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tls.crt").write_bytes(serving.cert_pem)
        (workdir / "tls.key").write_bytes(serving.key_pem)
        self.port = free_port()
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {
                "server": f"https://127.0.0.1:{self.port}",
                "certificate-authority-data": base64.b64encode(ca.cert_pem).decode()}}],
            "users": [{"name": "anyone", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "anyone"}}]}))
        upstream = plane._tls_context()  # admin client certificate towards the real apiserver
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.throttle(self.command, self.path):
                    proxy.throttled.append(f"{self.command} {self.path}")
                    status = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429,
                                         "reason": "TooManyRequests",
                                         "message": "Too many requests, please try again later."}).encode()
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(status)))
                    self.end_headers()
                    self.wfile.write(status)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in
                           ("host", "connection", "content-length", "accept-encoding", "transfer-encoding",
                            "keep-alive")}
                upstream_conn = http.client.HTTPSConnection("127.0.0.1", proxy.plane.api_port, context=upstream,
                                                            timeout=30)
                try:
                    upstream_conn.request(self.command, self.path, body=body, headers=headers)
                    resp = upstream_conn.getresponse()
                    status_code, payload, ctype = resp.status, resp.read(), resp.getheader("Content-Type")
                finally:
                    upstream_conn.close()
                self.send_response(status_code)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(workdir / "tls.crt", workdir / "tls.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(control_plane: ControlPlane, tmp_path: Path) -> Iterator[ThrottlingProxy]:
    p = ThrottlingProxy(control_plane, tmp_path / "proxy")
    yield p
    p.close()


def test_a_throttled_pvc_create_is_a_retriable_denial_naming_the_cause(
        fault_bench: FaultBench, proxy: ThrottlingProxy, namespace: str) -> None:  # noqa: F811
    proxy.throttle = lambda method, path: method == "POST" and path.endswith("/persistentvolumeclaims")
    server = fault_bench.server("throttled", LEOFLOW_STAGING_KUBECONFIG=str(proxy.kubeconfig))
    session = session_for(server)
    response = admit(session, server, namespace, "etl", "throttled")
    assert proxy.throttled, "the proxy saw no PVC create"
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 503, status  # retriable, like a 5xx: never the 403 of a refusal
    assert "429 Too Many Requests" in status["message"] and "Retry" in status["message"], status["message"]
    # Once the apiserver lets the create through, the same pod is admitted.
    proxy.throttle = lambda method, path: False
    again = admit(session, server, namespace, "etl", "throttled")
    assert again["allowed"] is True, again
