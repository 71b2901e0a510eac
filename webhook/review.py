"""The AdmissionReview v1 wire format: decoding a request, encoding a response (pure).

A malformed *request* is a ``ReviewError`` (HTTP 400); a refused *operation* is a
denial inside a well-formed response. The two channels stay apart.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from webhook.codec import encode
from webhook.verdicts import Verdict

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_WARNING = 120
MAX_UID = 128

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class ReviewError(ValueError):
    """The body is not an AdmissionReview v1 request."""


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class StatusDict(TypedDict, total=False):
    code: int
    message: str
    reason: str


class ResponseDict(TypedDict, total=False):
    uid: str
    allowed: bool
    status: StatusDict
    patch: str
    patchType: Literal["JSONPatch"]
    warnings: list[str]


class ReviewDict(TypedDict):
    apiVersion: str
    kind: str
    response: ResponseDict


@dataclass(frozen=True)
class AdmissionRequest:
    """The fields of ``request`` this webhook reads."""

    uid: str
    kind: GroupVersionKind
    operation: Operation
    namespace: str
    name: str
    object: dict[str, Any] | None
    dry_run: bool

    @property
    def is_pod(self) -> bool:
        return self.kind["group"] == "" and self.kind["kind"] == "Pod"


def _str(value: Any, what: str, *, required: bool = True, limit: int = 253) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ReviewError(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise ReviewError(f"{what} is longer than {limit} characters")
    return value


def parse_review(body: Any) -> AdmissionRequest:
    """Decode a JSON-decoded body; raises ``ReviewError`` naming the first problem."""
    if not isinstance(body, dict):
        raise ReviewError("body must be a JSON object (an AdmissionReview)")
    if body.get("kind") != KIND:
        raise ReviewError(f"kind must be {KIND!r}, got {str(body.get('kind'))[:60]!r}")
    if body.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion must be {API_VERSION!r}, got {str(body.get('apiVersion'))[:60]!r}")
    req = body.get("request")
    if not isinstance(req, dict):
        raise ReviewError("request must be an object")
    uid = _str(req.get("uid"), "request.uid", limit=MAX_UID)
    kind = req.get("kind")
    if not isinstance(kind, dict):
        raise ReviewError("request.kind must be an object")
    gvk: GroupVersionKind = {
        "group": _str(kind.get("group"), "request.kind.group", required=False),
        "version": _str(kind.get("version"), "request.kind.version"),
        "kind": _str(kind.get("kind"), "request.kind.kind"),
    }
    operation = req.get("operation")
    if operation not in _OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(_OPERATIONS)}")
    obj = req.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise ReviewError("request.object must be an object or null")
    dry_run = req.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun must be a boolean")
    return AdmissionRequest(
        uid=uid,
        kind=gvk,
        operation=operation,
        namespace=_str(req.get("namespace"), "request.namespace", required=False),
        name=_str(req.get("name"), "request.name", required=False),
        object=obj,
        dry_run=dry_run,
    )


def request_uid(body: Any) -> str | None:
    """The uid of a body that failed to parse, when one can be found (to echo it)."""
    if isinstance(body, dict) and isinstance(body.get("request"), dict):
        uid = body["request"].get("uid")
        if isinstance(uid, str) and 0 < len(uid) <= MAX_UID:
            return uid
    return None


def _warning(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= MAX_WARNING else clean[: MAX_WARNING - 3] + "..."


def encode_response(uid: str, verdict: Verdict) -> ReviewDict:
    """The AdmissionReview response for ``verdict``; uid echoed, patch and patchType together."""
    response: ResponseDict = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {"code": verdict.code, "message": verdict.message,
                              "reason": _status_reason(verdict.code)}
    elif verdict.patch:
        response["patch"] = base64.b64encode(encode(verdict.patch)).decode("ascii")
        response["patchType"] = "JSONPatch"
    if verdict.warnings:
        response["warnings"] = [_warning(w) for w in verdict.warnings]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _status_reason(code: int) -> str:
    return {400: "BadRequest", 403: "Forbidden", 409: "Conflict", 422: "Invalid",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(code, "Forbidden")
