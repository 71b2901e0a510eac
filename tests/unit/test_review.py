from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from webhook.review import ReviewError, encode_response, parse_review
from webhook.verdicts import allow, deny, patched


def _review(**request: Any) -> dict[str, Any]:
    base = {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
            "namespace": "ns", "object": {"metadata": {}}}
    base.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


def test_parse_a_pod_create() -> None:
    req = parse_review(_review(dryRun=True))
    assert req.is_pod and req.operation == "CREATE" and req.dry_run and req.uid == "u-1"


@pytest.mark.parametrize("body", [
    None, [], "x", {"kind": "AdmissionReview"}, {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"},
    _review(uid=""), _review(uid=5), _review(operation="PATCH"), _review(kind="Pod"), _review(object=[1]),
    _review(dryRun="yes"), _review(uid="u" * 1000),
])
def test_malformed_requests_are_review_errors(body: Any) -> None:
    with pytest.raises(ReviewError):
        parse_review(body)


def test_envelopes() -> None:
    assert encode_response("u", allow("x")) == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u", "allowed": True}}
    ops = [{"op": "add", "path": "/a", "value": 1}]
    resp = encode_response("u", patched(ops))["response"]
    assert resp["patchType"] == "JSONPatch" and json.loads(base64.b64decode(resp["patch"])) == ops
    denied = encode_response("u", deny("r", "no", code=409))["response"]
    assert denied == {"uid": "u", "allowed": False, "status": {"code": 409, "message": "no", "reason": "Conflict"}}
    assert "patch" not in encode_response("u", patched([]))["response"]  # no change -> no patch


def test_warnings_are_short_and_printable() -> None:
    resp = encode_response("u", allow("x", warnings=("a\nb" + "c" * 300,)))["response"]
    assert len(resp["warnings"][0]) == 120 and "\n" not in resp["warnings"][0]
