"""Hostile and malformed input against the real server: never a 5xx, never a traceback, always a
well-formed AdmissionReview answer or a 4xx; the server keeps serving; names and logs stay well-formed."""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from devenv.webhook import WebhookProcess
from tests.support.pods import admission_review, task_pod

pytestmark = pytest.mark.e2e
# 2,000 in `make test` (still catches a request uid read as if it were always a dict, a 500); `make soak` 20,000.
EXAMPLES = int(os.environ.get("LEOFLOW_DEV_FUZZ_EXAMPLES", "2000"))
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

text = st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
                 st.sampled_from(["", "..", "../../etc", 'a"b', "a\nb", "\x00", "é/ü", "x" * 300]))
huge = st.sampled_from(["y" * 1_000_000, "z" * 70_000])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                            st.dictionaries(text, inner, max_size=5)), max_leaves=20)
labels_map = st.dictionaries(st.sampled_from(["leoflow.io/staging", "leoflow.io/dag-id", "leoflow.io/run-id",
                                              "leoflow.io/staging-size", "leoflow.io/staging-storage-class",
                                              "leoflow.io/staging-pvc", "other"]),
                             st.one_of(text, st.just("enabled"), scalars), max_size=6)
container = st.fixed_dictionaries({"name": text}, optional={
    "env": st.one_of(st.lists(st.fixed_dictionaries({"name": text, "value": text}), max_size=3), json_values),
    "volumeMounts": st.one_of(st.lists(st.fixed_dictionaries({"name": text, "mountPath": text}), max_size=3),
                              json_values),
    "restartPolicy": st.just("Always")})
pod = st.fixed_dictionaries({
    "metadata": st.one_of(st.fixed_dictionaries({"labels": labels_map, "annotations": labels_map},
                                                optional={"name": text, "generateName": text}), json_values),
    "spec": st.one_of(st.fixed_dictionaries({
        "containers": st.one_of(st.lists(container, max_size=4), st.lists(container, min_size=300, max_size=300)
                                .filter(lambda _: True), json_values)},
        optional={"initContainers": st.lists(container, max_size=3),
                  "volumes": st.one_of(st.lists(json_values, max_size=3), json_values)}), json_values)})
request = st.fixed_dictionaries({
    "uid": st.one_of(st.uuids().map(str), text, scalars),
    "kind": st.one_of(st.just({"group": "", "version": "v1", "kind": "Pod"}), json_values),
    "operation": st.one_of(st.just("CREATE"), st.sampled_from(["UPDATE", "DELETE", "CONNECT", "PATCH"]), scalars),
    "namespace": st.one_of(st.just("fuzz-absent"), text),
    "object": st.one_of(pod, json_values),
}, optional={"dryRun": st.one_of(st.booleans(), scalars), "name": text})
reviews = st.fixed_dictionaries({
    "apiVersion": st.one_of(st.just("admission.k8s.io/v1"), st.sampled_from(["admission.k8s.io/v1beta1", "v1"]),
                            scalars),
    "kind": st.one_of(st.just("AdmissionReview"), scalars),
    "request": st.one_of(request, json_values)})
bodies = st.one_of(
    reviews.map(lambda r: ("application/json", json.dumps(r).encode())),
    json_values.map(lambda v: ("application/json", json.dumps(v).encode())),
    st.binary(max_size=2000).map(lambda b: ("application/json", b)),
    st.tuples(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", ""]), st.binary(max_size=200)),
    huge.map(lambda h: ("application/json", json.dumps(admission_review(
        task_pod(h, h), "fuzz-absent", uid=str(uuid.uuid4()))).encode())),
    st.integers(1, 200_000).map(lambda n: ("application/json", b"[" * n + b"]" * n)),
)


def _check(resp: requests.Response, sent: bytes) -> None:
    assert resp.status_code in (200, 400, 413, 415), (resp.status_code, resp.text[:300])
    assert "Traceback" not in resp.text
    body = resp.json()
    if resp.status_code != 200 and "response" in body:  # a malformed request whose uid could be read: echoed
        assert resp.status_code == 400 and body["kind"] == "AdmissionReview"
        response = body["response"]
        assert response["uid"] == json.loads(sent)["request"]["uid"]
        assert response["allowed"] is False and response["status"]["code"] == 400
        assert response["status"]["message"].startswith("leoflow-staging: not a valid AdmissionReview")
        return
    if resp.status_code != 200:
        assert isinstance(body.get("error"), str)
        return
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == json.loads(sent)["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if response.get("patch"):
        assert response["patchType"] == "JSONPatch" and response["allowed"]
    if not response["allowed"]:
        assert response["status"]["message"].startswith("leoflow-staging: ")
        assert response["status"]["code"] != 500, response["status"]  # an unexpected exception, not a decision


def test_fuzzed_bodies_never_break_the_server(webhook: WebhookProcess) -> None:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(webhook.ca_file)
    sent = {"n": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example])
    @given(bodies)
    def post(item: tuple[str, bytes]) -> None:
        content_type, payload = item
        headers = {"Content-Type": content_type} if content_type else {}
        resp = session.post(webhook.url + "/mutate", data=payload, headers=headers, timeout=30)
        sent["n"] += 1
        _check(resp, payload)

    post()
    assert sent["n"] >= min(EXAMPLES, 10_000) * 0.9
    assert session.get(webhook.url + "/healthz", timeout=10).status_code == 200
    print(f"fuzz: {sent['n']} bodies posted, no 5xx, no traceback")


@pytest.mark.parametrize("run_id", ["a/b", "../../etc/passwd", 'quote"d', "it's", "tab\tid", "emoji-🚀",
                                    "UPPER/lower..", "x" * 250, "line\nbreak", "{\"json\": 1}"])
def test_escaping_ids_keep_names_and_logs_well_formed(webhook: WebhookProcess, api: client.ApiClient,
                                                      core: client.CoreV1Api, namespace: str, run_id: str) -> None:
    body = task_pod("dag/../x", run_id)
    try:
        pod = core.create_namespaced_pod(namespace, body)
        name = pod.metadata.annotations["leoflow.io/staging-pvc"]
        assert DNS1123.match(name) and len(name) <= 63
        pvc = core.read_namespaced_persistent_volume_claim(name, namespace)
        assert pvc.metadata.annotations["leoflow.io/run-id"] == run_id  # the raw id survives intact
    except client.ApiException as exc:
        message = json.loads(exc.body)["message"]
        assert "control characters" in message  # the only ids refused: a newline or tab cannot be an id
        assert any(c in run_id for c in "\n\t")
    assert webhook.process is not None
    for line in webhook.process.log_path.read_text().splitlines():
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)  # every JSON log line parses, whatever the ids held
            assert isinstance(record, dict)
