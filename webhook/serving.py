"""Serving the webhook with gunicorn: gthread workers (keep-alive), a listening socket per worker, TLS >= 1.2,
metrics across workers."""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from shared.errors import SettingsError
from shared.settings import Settings
from webhook.keepalive_worker import LingeringThreadWorker


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

    def __init__(self, settings: Settings, *, multiproc_dir: str) -> None:
        self._settings = settings
        self._multiproc_dir = multiproc_dir
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options = {
            "bind": [f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"],
            "workers": s.workers,
            # gthread, with a thread that answers the next request of its keep-alive connection itself
            # (webhook.keepalive_worker: two wake-ups fewer per request).
            "worker_class": LingeringThreadWorker,
            # Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new connections
            # over them. With one shared socket, the worker that wakes first accepts a burst of connections,
            # and the apiserver's keep-alive connections then stay on it: measured, all 8 of wrk's
            # connections on one worker in 4 runs of 5, and half the throughput (docs/performance.md).
            "reuse_port": True,
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
    WebhookServer(settings, multiproc_dir=multiproc_dir).run()
