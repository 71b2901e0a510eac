"""The floor of any webhook: a tiny TLS server that answers every review with a fixed patch.

Python's ``http.server`` (HTTP/1.1 keep-alive, a thread per connection) behind ``ssl``: it reads the body, decodes
the AdmissionReview (it has to: the answer must echo the request's uid) and writes one precomputed answer with the
patch given at start. No framework, no WSGI, no database, no Kubernetes call: what is left is the network, TLS,
HTTP parsing and the JSON decode every webhook pays. It counts the TCP connections it accepts and times each answer
(body read + decode + answer built, the same span the real webhook's histogram covers), and serves both as JSON on
a second, plain-HTTP loopback port (so reading them opens no connection on the measured port).

``python -m bench.minimal_webhook --port P --stats-port S --cert-file C --key-file K --patch-file F`` runs it;
``MinimalWebhook`` starts it as a child process with a fresh certificate.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from certs.issuance import KeyPair, issue_ca, issue_serving
from devenv.processes import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[1]


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepts = 0
        self.times_ms: list[float] = []

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"accepts": self.accepts, "times_ms": list(self.times_ms)}


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext, patch_b64: str, counters: _Counters) -> None:
        self.context, self.counters = context, counters
        self.answer_head = (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"')
        self.answer_tail = (f'","allowed":true,"patchType":"JSONPatch","patch":"{patch_b64}"}}}}').encode()
        super().__init__(("127.0.0.1", port), _MutateHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as gunicorn and Go's net/http do
        with self.counters.lock:
            self.counters.accepts += 1
        return sock, addr


class _MutateHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the apiserver expects
    server: _TlsServer

    def setup(self) -> None:  # the TLS handshake in the connection's own thread, not in accept()
        self.request = self.server.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def do_POST(self) -> None:
        started = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        uid = json.loads(body)["request"]["uid"]
        answer = self.server.answer_head + uid.encode() + self.server.answer_tail
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(answer)).encode() + b"\r\n\r\n" + answer)
        with self.server.counters.lock:
            self.server.counters.times_ms.append(elapsed_ms)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _stats_server(port: int, counters: _Counters) -> HTTPServer:
    class Stats(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(counters.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return HTTPServer(("127.0.0.1", port), Stats)


def serve(port: int, stats_port: int, cert_file: str, key_file: str, patch: list[dict[str, Any]]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    counters = _Counters()
    stats = _stats_server(stats_port, counters)
    threading.Thread(target=stats.serve_forever, daemon=True).start()
    patch_b64 = base64.b64encode(json.dumps(patch).encode()).decode()
    _TlsServer(port, context, patch_b64, counters).serve_forever()


@dataclass
class MinimalWebhook:
    """The server above as a child process on free loopback ports, with a fresh CA and serving certificate."""

    workdir: Path
    patch: list[dict[str, Any]]
    port: int = 0
    stats_port: int = 0
    ca: KeyPair | None = None
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self.ca = issue_ca(common_name="leoflow-bench-minimal-ca", now=now, validity=dt.timedelta(days=1))
        serving = issue_serving(self.ca, hosts=("127.0.0.1", "localhost"), now=now, validity=dt.timedelta(days=1))
        cert, key, patch = self.workdir / "tls.crt", self.workdir / "tls.key", self.workdir / "patch.json"
        cert.write_bytes(serving.cert_pem)
        key.write_bytes(serving.key_pem)
        patch.write_text(json.dumps(self.patch))
        self.port, self.stats_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = ManagedProcess("minimal-webhook", [
            sys.executable, "-m", "bench.minimal_webhook", "--port", str(self.port), "--stats-port",
            str(self.stats_port), "--cert-file", str(cert), "--key-file", str(key), "--patch-file", str(patch),
        ], self.workdir / "minimal-webhook.log", env=env)
        self.process.start()
        self.process.wait_healthy(lambda: bool(self.stats()), timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def stats(self) -> dict[str, Any]:
        """Accepted connections so far and every answer's server-side time (ms), in order."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/", timeout=5) as resp:
            return dict(json.loads(resp.read()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--port", "--stats-port"):
        parser.add_argument(flag, type=int, required=True)
    for flag in ("--cert-file", "--key-file", "--patch-file"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    serve(args.port, args.stats_port, args.cert_file, args.key_file, json.loads(Path(args.patch_file).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
