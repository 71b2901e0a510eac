"""Serving the webhook with gunicorn's stock gthread worker (keep-alive), TLS >= 1.2 with reads bounded in time
(``webhook.tls_connection``: stalled clients cannot hold the threads), metrics across workers."""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

from shared.errors import SettingsError
from shared.settings import Settings
from webhook.tls_connection import bounded_read_context


def _ssl_context(read_timeout: float, config: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    context: ssl.SSLContext = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return bounded_read_context(context, read_timeout)


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
            "worker_class": "gthread",
            "threads": s.threads,
            "keepalive": 75,  # the apiserver keeps idle webhook connections up to 90 s
            "timeout": 30,
            "graceful_timeout": 15,
            "certfile": s.cert_file,
            "keyfile": s.key_file,
            "ssl_context": functools.partial(_ssl_context, s.read_timeout),
            "child_exit": _child_exit,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level.lower(),
            "proc_name": "leoflow-staging-webhook",
            "limit_request_field_size": 16384,
            "control_socket_disable": True,  # gunicorn's runtime control socket: nothing here uses it
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
