"""The HTTP shell (Flask app factory): transport only, no decisions.

``/readyz``, ``/metrics`` and every error are Flask's; ``POST /mutate`` and ``GET /healthz`` are plain WSGI
routes mounted in front of it (``webhook.wsgi_routes``: the admission's cost without Flask's per-request
machinery).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from webhook import codec, metrics
from webhook.handler import AdmissionHandler
from webhook.wsgi_routes import AdmissionRoute, ExactRoutes, healthz

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

log = logging.getLogger("leoflow_staging.webhook")

ReadyCheck = Callable[[], list[str]]  # returns problems; empty means ready


def _json(payload: Any, status: int = 200) -> Response:
    return Response(codec.encode(payload), status=status, mimetype="application/json")


def _bad_request(message: str, status: int = 400) -> Response:
    metrics.BAD_REQUESTS.labels(str(status)).inc()
    return _json({"error": message}, status)


def create_app(*, handler: AdmissionHandler, ready: ReadyCheck, max_body_bytes: int,
               multiproc_dir: str | None = None, extra_metrics: Collector | None = None,
               status: Callable[[], dict[str, Any]] | None = None) -> Flask:
    """The webhook's WSGI app; all collaborators are passed in (nothing happens at import)."""
    app = Flask("leoflow_staging_webhook")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes

    @app.get("/readyz")
    def readyz() -> Response:
        problems = ready()
        caches = {"caches": status()} if status else {}  # this worker's watch-fed caches
        if problems:
            return _json({"status": "not ready", "problems": problems, **caches}, 503)
        return _json({"status": "ok", **caches})

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        data, content_type = metrics.render(multiproc_dir, extra_metrics)
        return Response(data, mimetype=None, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _bad_request(exc.description or exc.name, exc.code or 400)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # pragma: no cover - routes catch their own errors
        log.exception("unexpected error")
        return _json({"error": "internal error"}, 500)

    # The routes called all the time bypass Flask's machinery (webhook.wsgi_routes; Flask's documented way to
    # wrap an app in WSGI middleware).
    app.wsgi_app = ExactRoutes(app.wsgi_app, {  # type: ignore[method-assign]
        "/mutate": AdmissionRoute(handler, max_body_bytes=max_body_bytes), "/healthz": healthz})
    return app


__all__ = ["ReadyCheck", "create_app"]
