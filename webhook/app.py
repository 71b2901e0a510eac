"""The HTTP shell (Flask app factory): transport only, no decisions.

``POST /mutate`` caps the body, requires JSON, decodes the AdmissionReview (HTTP 400 on a malformed body, with
the review's uid echoed in an AdmissionReview wherever it can be read), asks the handler and encodes its answer.
No input produces a 500 or a traceback in the response; an unexpected error in the handler becomes a denial.
``GET /healthz`` is liveness, ``GET /readyz`` readiness, ``GET /metrics`` Prometheus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from webhook import codec, metrics
from webhook.handler import AdmissionHandler, Outcome
from webhook.review import AdmissionRequest, ReviewError, encode_response, parse_review, request_uid
from webhook.tls_connection import request_arrival
from webhook.verdicts import deny

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

log = logging.getLogger("leoflow_staging.webhook")

ReadyCheck = Callable[[], list[str]]  # returns problems; empty means ready


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(codec.encode(payload), status=status, mimetype="application/json", headers=headers)


def _bad_request(message: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    """A 4xx ``{"error": message}``, counted by status."""
    metrics.BAD_REQUESTS.labels(str(status)).inc()
    return _json({"error": message}, status, headers)


def _malformed_review(uid: str, message: str) -> Response:
    """HTTP 400 for a review that cannot be answered, as an AdmissionReview when its uid could be read (the
    apiserver then shows the message instead of a bare status)."""
    metrics.BAD_REQUESTS.labels("400").inc()
    verdict = deny("malformed_review", f"leoflow-staging: not a valid AdmissionReview v1 request: {message}",
                   code=400)
    return _json(encode_response(uid, verdict), 400)


def _pod_name(req: AdmissionRequest) -> str:
    meta = (req.object or {}).get("metadata")
    if req.name:
        return req.name
    if isinstance(meta, dict):
        return str(meta.get("name") or (str(meta.get("generateName") or "") + "*"))[:253]
    return ""


def _log_outcome(outcome: Outcome, req: AdmissionRequest, elapsed: float, waited: float) -> None:
    """One JSON line per admission: uid, namespace, pod (or generateName*), ids, pvc, decision, ms (and the ms the
    request waited for a thread before it, when that is over 1 ms)."""
    verdict = outcome.verdict
    fields: dict[str, Any] = {"event": "admission", "uid": req.uid, "namespace": req.namespace,
                              "operation": req.operation, "kind": req.kind["kind"], "pod": _pod_name(req),
                              "allowed": verdict.allowed, "decision": verdict.reason,
                              "ms": round(elapsed * 1000, 2)}
    if waited > 0.001:
        fields["waited_ms"] = round(waited * 1000, 1)
    if outcome.intent is not None:
        fields.update(dag_id=outcome.intent.dag_id, run_id=outcome.intent.run_id, pvc=outcome.intent.pvc_name)
    if outcome.ensured is not None:
        fields.update(pvc_created=outcome.ensured.created, storage_class=outcome.ensured.storage_class)
    if verdict.warnings:
        fields["warnings"] = list(verdict.warnings)
    if not verdict.allowed:
        fields.update(message=verdict.message, retriable=verdict.retriable)
        log.warning("admission denied", extra={"fields": fields})
    else:
        log.info("admission", extra={"fields": fields})


def _read_body(max_body_bytes: int) -> bytes | Response:
    """The request body, or the 4xx that answers it. The input ends at Content-Length or at the end of a chunked
    body (WSGI's ``wsgi.input_terminated``): one byte past the cap is read to tell a chunked body over it."""
    length = request.content_length
    if length is not None and length > max_body_bytes:  # refused from the header: the body is never read
        return _bad_request(f"body larger than {max_body_bytes} bytes", 413)
    try:
        raw: bytes = request.environ["wsgi.input"].read(max_body_bytes + 1)
    except Exception as exc:  # a malformed chunk, a client that stalled or went away: the client's fault
        log.warning("unreadable request body: %s", str(exc)[:200] or type(exc).__name__)
        return _bad_request(f"the request body could not be read: {str(exc)[:200] or type(exc).__name__}")
    if len(raw) > max_body_bytes:
        return _bad_request(f"body larger than {max_body_bytes} bytes", 413)
    if length is not None and len(raw) < length:  # the client stalled or went away mid-body
        return _bad_request(f"the request body ended after {len(raw)} of its {length} bytes")
    if not raw:
        return _bad_request("empty body; expected an AdmissionReview")
    return raw


def create_app(*, handler: AdmissionHandler, ready: ReadyCheck, max_body_bytes: int,
               multiproc_dir: str | None = None, extra_metrics: Collector | None = None,
               status: Callable[[], dict[str, Any]] | None = None) -> Flask:
    """The webhook's WSGI app; all collaborators are passed in (nothing happens at import)."""
    app = Flask("leoflow_staging_webhook")

    @app.post("/mutate", provide_automatic_options=False)
    def mutate() -> Response:
        started = time.monotonic()
        arrived = request_arrival(request.environ)
        if request.mimetype != "application/json":
            return _bad_request(f"Content-Type must be application/json, got {request.mimetype!r}", 415)
        raw = _read_body(max_body_bytes)
        if isinstance(raw, Response):
            return raw
        try:
            body = codec.decode(raw)
        except (ValueError, RecursionError) as exc:
            return _bad_request(f"body is not valid JSON: {str(exc)[:200]}")
        try:
            req = parse_review(body)
        except ReviewError as exc:
            uid = request_uid(body)
            if uid is not None:
                return _malformed_review(uid, str(exc))
            return _bad_request(f"not an AdmissionReview v1 request: {exc}")
        try:
            outcome = handler.handle(req, arrived=arrived)
        except Exception:  # the last line of defence: answer, log the traceback, keep serving
            log.exception("unexpected error while handling admission %s", req.uid)
            outcome = Outcome(deny("internal_error", "leoflow-staging: internal error while admitting the "
                                   "pod (see the webhook's logs); retry", code=500, retriable=True))
        elapsed = time.monotonic() - started
        verdict = outcome.verdict
        kind = "denied" if not verdict.allowed else ("patched" if verdict.patch else "allowed")
        metrics.ADMISSIONS.labels(kind, verdict.reason).inc()
        if outcome.ensured is not None and outcome.ensured.created:
            metrics.PVCS_CREATED.inc()
        metrics.LATENCY.observe(elapsed)
        _log_outcome(outcome, req, elapsed, started - arrived if arrived is not None else 0.0)
        return _json(encode_response(req.uid, verdict))

    @app.get("/healthz", provide_automatic_options=False)
    def healthz() -> Response:
        return _json({"status": "ok"})

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
        headers = None
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers = {"Allow": ", ".join(exc.valid_methods)}
        return _bad_request(exc.description or exc.name, exc.code or 400, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # pragma: no cover - routes catch their own errors
        log.exception("unexpected error")
        return _json({"error": "internal error"}, 500)

    return app


__all__ = ["ReadyCheck", "create_app"]
