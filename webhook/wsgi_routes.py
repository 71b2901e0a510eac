"""The two routes called all the time, as plain WSGI apps in front of the Flask app (``webhook.app``).

``POST /mutate`` (the apiserver, on every pod CREATE) and ``GET /healthz`` (the kubelet's probe) skip Flask's
request and response objects, its contexts and signals. Measured on the warm admission under wrk, that
machinery cost 0.25-0.45 ms of CPU per request: as much as the admission's own work (docs/performance.md).
What they answer is what the Flask routes answered: the same statuses, bodies and headers, except that a
chunked body over the cap is now a 413 (Flask cut it at the cap and answered 400, not JSON) and a method the
route does not serve gets 405 with ``Allow``. Everything else goes to Flask.

``/mutate`` caps the body, requires JSON, decodes the AdmissionReview (HTTP 400 on a malformed body), asks the
handler, encodes the answer. No input produces a 500 or a traceback in the response; an unexpected error in
the handler becomes a denial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import MethodNotAllowed
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_content_length

from webhook import codec, metrics
from webhook.handler import AdmissionHandler, Outcome
from webhook.review import AdmissionRequest, ReviewError, encode_response, parse_review
from webhook.verdicts import deny

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("leoflow_staging.webhook")

_JSON = ("Content-Type", "application/json")
_METHOD_NOT_ALLOWED = MethodNotAllowed.description  # what Flask's routes answered


def answer(start_response: StartResponse, payload: Any, status: int = 200,
           headers: Iterable[tuple[str, str]] = (), *, body: bool = True) -> list[bytes]:
    """``payload`` as compact JSON with its length (``body=False``: the headers only, for HEAD)."""
    data = codec.encode(payload)
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [_JSON, ("Content-Length", str(len(data))), *headers])
    return [data] if body else []


def bad_request(start_response: StartResponse, message: str, status: int = 400,
                headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """A 4xx ``{"error": message}``, counted by status."""
    metrics.BAD_REQUESTS.labels(str(status)).inc()
    return answer(start_response, {"error": message}, status, headers)


def _pod_name(req: AdmissionRequest) -> str:
    meta = (req.object or {}).get("metadata")
    if req.name:
        return req.name
    if isinstance(meta, dict):
        return str(meta.get("name") or (str(meta.get("generateName") or "") + "*"))[:253]
    return ""


def _log_outcome(outcome: Outcome, req: AdmissionRequest, elapsed: float) -> None:
    """One JSON line per admission: uid, namespace, pod (or generateName*), ids, pvc, decision, ms."""
    verdict = outcome.verdict
    fields: dict[str, Any] = {"event": "admission", "uid": req.uid, "namespace": req.namespace,
                              "operation": req.operation, "kind": req.kind["kind"], "pod": _pod_name(req),
                              "allowed": verdict.allowed, "decision": verdict.reason,
                              "ms": round(elapsed * 1000, 2)}
    if outcome.intent is not None:
        pvc = outcome.ensured.pvc_name if outcome.ensured else outcome.intent.pvc_name  # a legacy name stays
        fields.update(dag_id=outcome.intent.dag_id, run_id=outcome.intent.run_id, pvc=pvc)
    if outcome.ensured is not None:
        fields.update(pvc_created=outcome.ensured.created, storage_class=outcome.ensured.storage_class)
    if not verdict.allowed:
        fields.update(message=verdict.message, retriable=verdict.retriable)
        log.warning("admission denied", extra={"fields": fields})
    else:
        log.info("admission", extra={"fields": fields})


class AdmissionRoute:
    """``POST /mutate``: an AdmissionReview in, an AdmissionReview out."""

    def __init__(self, handler: AdmissionHandler, *, max_body_bytes: int) -> None:
        self._handler, self._max = handler, max_body_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return bad_request(start_response, _METHOD_NOT_ALLOWED, 405, [("Allow", "POST")])
        started = time.perf_counter()
        mimetype = parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower()
        if mimetype != "application/json":
            return bad_request(start_response, f"Content-Type must be application/json, got {mimetype!r}", 415)
        length = get_content_length(environ)
        if length is not None and length > self._max:  # refused from the header: the body is never read
            return bad_request(start_response, f"body larger than {self._max} bytes", 413)
        # gunicorn ends the input at Content-Length, or at the end of a chunked body: read one byte past the cap
        # to tell a chunked body over it (werkzeug's capped stream would cut it at the cap without a word).
        raw = environ["wsgi.input"].read(self._max + 1)
        if len(raw) > self._max:
            return bad_request(start_response, f"body larger than {self._max} bytes", 413)
        if not raw:
            return bad_request(start_response, "empty body; expected an AdmissionReview")
        try:
            body = codec.decode(raw)
        except (ValueError, RecursionError) as exc:
            return bad_request(start_response, f"body is not valid JSON: {str(exc)[:200]}")
        try:
            req = parse_review(body)
        except ReviewError as exc:
            return bad_request(start_response, f"not an AdmissionReview v1 request: {exc}")
        try:
            outcome = self._handler.handle(req)
        except Exception:  # the last line of defence: answer, log the traceback, keep serving
            log.exception("unexpected error while handling admission %s", req.uid)
            outcome = Outcome(deny("internal_error", "leoflow-staging: internal error while admitting the "
                                   "pod (see the webhook's logs); retry", code=500, retriable=True))
        elapsed = time.perf_counter() - started
        verdict = outcome.verdict
        kind = "denied" if not verdict.allowed else ("patched" if verdict.patch else "allowed")
        metrics.ADMISSIONS.labels(kind, verdict.reason).inc()
        if outcome.ensured is not None and outcome.ensured.created:
            metrics.PVCS_CREATED.inc()
        metrics.LATENCY.observe(elapsed)
        _log_outcome(outcome, req, elapsed)
        return answer(start_response, encode_response(req.uid, verdict))


def healthz(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``GET /healthz``: the process answers (liveness; readiness is Flask's ``/readyz``)."""
    method = environ.get("REQUEST_METHOD")
    if method not in ("GET", "HEAD"):
        return bad_request(start_response, _METHOD_NOT_ALLOWED, 405, [("Allow", "GET, HEAD")])
    return answer(start_response, {"status": "ok"}, body=method == "GET")


class ExactRoutes:
    """WSGI middleware: a request whose path is one of ``routes`` goes to that app, any other to ``fallback``."""

    def __init__(self, fallback: WSGIApplication, routes: Mapping[str, WSGIApplication]) -> None:
        self._fallback, self._routes = fallback, dict(routes)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route: Callable[..., Iterable[bytes]] = self._routes.get(environ.get("PATH_INFO", ""), self._fallback)
        try:
            return route(environ, start_response)
        except Exception:  # as Flask's last error handler does: never a traceback to the client
            if route is self._fallback:
                raise
            log.exception("unexpected error")
            return answer(start_response, {"error": "internal error"}, 500)


__all__ = ["AdmissionRoute", "ExactRoutes", "answer", "bad_request", "healthz"]
