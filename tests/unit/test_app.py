"""The HTTP shell alone (Flask's test client, a stub handler): statuses and bodies of every transport outcome.
The same routes are exercised over TLS against the real server in tests/e2e/test_webhook_transport.py."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask

from tests.support.pods import admission_review, task_pod
from webhook.app import create_app
from webhook.handler import Outcome
from webhook.review import AdmissionRequest
from webhook.verdicts import allow


class StubHandler:
    def __init__(self, outcome: Outcome | Exception) -> None:
        self.outcome = outcome
        self.seen: list[AdmissionRequest] = []

    def handle(self, req: AdmissionRequest, *, arrived: float | None = None) -> Outcome:
        self.seen.append(req)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _app(outcome: Outcome | Exception | None = None) -> Flask:
    handler: Any = StubHandler(outcome or Outcome(allow("not_opted_in")))
    return create_app(handler=handler, ready=lambda: [], max_body_bytes=4096)


def _review(uid: str = "u-1") -> dict[str, Any]:
    return admission_review(task_pod("etl", "r", opt_in=False), "default", uid=uid)


def test_a_review_is_answered_with_its_uid() -> None:
    r = _app().test_client().post("/mutate", json=_review("abc"))
    assert r.status_code == 200
    assert r.json == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "response": {"uid": "abc", "allowed": True}}


def test_transport_errors_are_4xx_with_a_message() -> None:
    c = _app().test_client()
    r = c.get("/mutate")
    assert (r.status_code, r.headers["Allow"]) == (405, "POST")
    r = c.post("/mutate", data="{}", content_type="text/plain")
    assert r.status_code == 415 and "application/json" in r.json["error"]
    r = c.post("/mutate", data=b"{" + b" " * 5000 + b"}", content_type="application/json")
    assert r.status_code == 413 and "larger than 4096" in r.json["error"]
    r = c.post("/mutate", data=b"", content_type="application/json")
    assert r.status_code == 400 and "empty body" in r.json["error"]
    r = c.post("/mutate", data=b"{nope", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json["error"]
    r = c.post("/mutate", json={"kind": "Pod"})
    assert r.status_code == 400 and "AdmissionReview" in r.json["error"]
    assert c.get("/nowhere").status_code == 404


def test_a_malformed_request_with_a_uid_gets_a_review_echoing_it() -> None:
    review = _review("echo-me")
    review["request"]["kind"] = "Pod"  # must be an object
    r = _app().test_client().post("/mutate", json=review)
    assert r.status_code == 400
    response = r.json["response"]
    assert (response["uid"], response["allowed"], response["status"]["code"]) == ("echo-me", False, 400)
    assert "request.kind" in response["status"]["message"]


def test_an_unexpected_handler_error_is_a_retriable_denial_not_a_500_page() -> None:
    r = _app(RuntimeError("boom")).test_client().post("/mutate", json=_review("x"))
    assert r.status_code == 200
    response = r.json["response"]
    assert (response["uid"], response["allowed"], response["status"]["code"]) == ("x", False, 500)
    assert "internal error" in response["status"]["message"] and "boom" not in json.dumps(r.json)


def test_probes() -> None:
    c = _app().test_client()
    assert (c.get("/healthz").status_code, c.get("/healthz").json) == (200, {"status": "ok"})
    assert c.head("/healthz").status_code == 200
    assert c.get("/readyz").json == {"status": "ok"}
    handler: Any = StubHandler(Outcome(allow("x")))
    app = create_app(handler=handler, ready=lambda: ["database down"], max_body_bytes=10)
    r = app.test_client().get("/readyz")
    assert (r.status_code, r.json["problems"]) == (503, ["database down"])
