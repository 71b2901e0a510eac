"""Serving the webhook with gunicorn's stock gthread worker (keep-alive), TLS >= 1.2, metrics across workers, and
a bound on how long a read from a client may wait.

Slow clients: gthread hands a connection to a pool thread once its first bytes arrive, and the thread then reads
the TLS handshake, the headers and the body with blocking reads that gunicorn does not bound. A few connections
that send half a request would hold every thread, and with ``failurePolicy: Fail`` every opted-in pod would be
refused. The listening socket is therefore made here, with ``SO_RCVTIMEO`` set to ``read_timeout`` (Linux copies
it to every accepted connection), and handed to gunicorn as ``fd://N`` (its documented bind form): a read that
waits longer fails, and gunicorn closes that connection. Idle keep-alive connections wait in gthread's poller,
not in a read, so the timeout never touches them.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from shared.errors import SettingsError
from shared.settings import Settings


def _ssl_context(config: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    context: ssl.SSLContext = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess  # noqa: PLC0415 - only in the arbiter, after fork

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running ``webhook.factory.build_app(settings)`` in each worker (built after fork,
    so no database pool or HTTP connection is shared between processes)."""

    def __init__(self, settings: Settings, *, multiproc_dir: str, listener: socket.socket) -> None:
        self._settings = settings
        self._multiproc_dir = multiproc_dir
        self._listener = listener  # kept open for the arbiter and the workers it forks
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options = {
            "bind": [f"fd://{self._listener.fileno()}"],
            "workers": s.workers,
            "worker_class": "gthread",
            "threads": s.threads,
            "keepalive": 75,  # the apiserver keeps idle webhook connections up to 90 s
            "timeout": 30,
            "graceful_timeout": 15,
            "certfile": s.cert_file,
            "keyfile": s.key_file,
            "ssl_context": _ssl_context,
            "child_exit": _child_exit,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level.lower(),
            "proc_name": "leoflow-staging-webhook",
            "limit_request_field_size": 16384,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from shared.logs import configure_logging  # noqa: PLC0415 - per worker
        from webhook.factory import build_app  # noqa: PLC0415

        configure_logging(self._settings.log_level)
        return build_app(self._settings, multiproc_dir=self._multiproc_dir)


def serve(settings: Settings) -> None:
    """Run until SIGTERM. TLS is mandatory: the apiserver calls webhooks over HTTPS only."""
    if not settings.cert_file or not settings.key_file:
        raise SettingsError("serve needs --cert-file and --key-file (LEOFLOW_STAGING_CERT_FILE / _KEY_FILE)")
    for path in (settings.cert_file, settings.key_file):
        if not os.path.isfile(path):
            raise SettingsError(f"TLS file {path!r} does not exist")
    multiproc_dir = tempfile.mkdtemp(prefix="leoflow-staging-metrics-")
    # prometheus_client picks its multiprocess value class from this variable at import time,
    # so it must be set before anything imports webhook.metrics (the factory does).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    from webhook.factory import validate  # noqa: PLC0415

    validate(settings)
    listener = listening_socket(settings.host, settings.port, read_timeout=settings.read_timeout)
    WebhookServer(settings, multiproc_dir=multiproc_dir, listener=listener).run()


def listening_socket(host: str, port: int, *, read_timeout: float) -> socket.socket:
    """A listening TCP socket whose accepted connections inherit ``SO_RCVTIMEO = read_timeout``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    seconds = int(read_timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", seconds, int((read_timeout - seconds) * 1_000_000)))
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
