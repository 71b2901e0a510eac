"""The admission handler's decision sequence with a fake provisioner: what passes unchanged, what is denied
before any side effect, how dry runs and adapter errors are answered, and how the time budget is counted.
The same behaviours against the real apiserver and PostgreSQL: tests/e2e/test_webhook_admission.py."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import claim_events, labels
from shared.errors import DatabaseUnavailable, DataRejected, KubeForbidden, KubeUnavailable, SchemaError, StagingError
from shared.naming import pvc_name
from tests.support.pods import admission_review, task_pod
from webhook.handler import AdmissionHandler, Outcome
from webhook.intent import SizePolicy, StagingIntent
from webhook.provisioning import Deadline, Ensured
from webhook.review import AdmissionRequest, encode_response, parse_review
from webhook.verdicts import Denied, Verdict, deny

DAG, RUN = "etl", "manual__2026-05-23T10:00:00+00:00"
PVC = pvc_name(DAG, RUN)
SIZES = SizePolicy(default="1Gi", maximum="10Gi")
BUDGET = 8.0


class FakeProvisioner:
    """``ensure`` and ``choose_class``: records each call and the deadline it was given; raises ``error``."""

    def __init__(self, *, created: bool = True, error: Exception | None = None,
                 warnings: tuple[str, ...] = ()) -> None:
        self.created, self.error, self.warnings = created, error, warnings
        self.calls: list[tuple[str, str, StagingIntent]] = []
        self.deadlines: list[Deadline] = []
        self.check_deadline = False  # do what the real one does first: refuse a step that does not fit

    def _called(self, what: str, namespace: str, intent: StagingIntent, deadline: Deadline) -> None:
        self.calls.append((what, namespace, intent))
        self.deadlines.append(deadline)
        if self.check_deadline:
            deadline.check("the fake's first step", 0.01)
        if self.error is not None:
            raise self.error

    def ensure(self, namespace: str, intent: StagingIntent, deadline: Deadline) -> Ensured:
        self._called("ensure", namespace, intent, deadline)
        return Ensured(intent.pvc_name, created=self.created, storage_class="nfs",
                       pvc_uid="pvc-uid-1" if self.created else "", warnings=self.warnings)

    def choose_class(self, intent: StagingIntent, deadline: Deadline) -> str:
        self._called("choose_class", "", intent, deadline)
        return "nfs"


def handler(provisioner: FakeProvisioner, *, events: list[claim_events.ClaimEvent] | None = None) -> AdmissionHandler:
    return AdmissionHandler(provisioner=provisioner, sizes=SIZES, budget=BUDGET,
                            events=events.append if events is not None else None)


def request(pod: dict[str, Any] | None = None, *, namespace: str = "team-a", dry_run: bool = False,
            **request_fields: Any) -> AdmissionRequest:
    review = admission_review(pod if pod is not None else task_pod(DAG, RUN, name="task-1"), namespace,
                              uid="review-uid", dry_run=dry_run)
    review["request"].update(request_fields)
    return parse_review(review)


def volume_op(verdict: Verdict) -> dict[str, Any]:
    assert verdict.patch is not None
    return next(op for op in verdict.patch if op["path"].startswith("/spec/volumes"))


# -- what passes unchanged -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("req", "reason"), [
    (request(kind={"group": "apps", "version": "v1", "kind": "Deployment"}), "not_a_pod"),
    (request(kind={"group": "example.com", "version": "v1", "kind": "Pod"}), "not_a_pod"),
    (request(operation="UPDATE"), "not_create"),
    (request(operation="DELETE", object=None), "not_create"),
    (request(task_pod(DAG, RUN, opt_in=False)), "not_opted_in"),
], ids=["deployment", "pod-of-another-group", "update", "delete", "not-opted-in"])
def test_what_is_not_an_opted_in_pod_create_passes_unchanged(req: AdmissionRequest, reason: str) -> None:
    fake = FakeProvisioner()
    out = handler(fake).handle(req)
    assert out.verdict == Verdict(allowed=True, reason=reason)
    assert out.verdict.patch is None and fake.calls == []


def test_a_pod_create_without_an_object_is_a_400_denial() -> None:
    fake = FakeProvisioner()
    verdict = handler(fake).handle(request(object=None)).verdict
    assert (verdict.allowed, verdict.reason, verdict.code) == (False, "malformed_pod", 400)
    assert fake.calls == []


def test_the_namespace_comes_from_the_request_else_from_the_pod_else_a_denial() -> None:
    fake = FakeProvisioner()
    assert handler(fake).handle(request(namespace="team-a")).verdict.allowed
    pod = task_pod(DAG, RUN, name="task-1")
    pod["metadata"]["namespace"] = "team-b"
    assert handler(fake).handle(request(pod, namespace="")).verdict.allowed
    assert [ns for _, ns, _ in fake.calls] == ["team-a", "team-b"]
    verdict = handler(fake).handle(request(task_pod(DAG, RUN), namespace="")).verdict
    assert (verdict.allowed, verdict.reason, verdict.code) == (False, "malformed_pod", 400)
    assert "namespace" in verdict.message and len(fake.calls) == 2


# -- denied before any side effect ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("pod", "reason", "words"), [
    (task_pod(DAG, "x" * 251), "invalid_id", "longer than 250"),
    (task_pod(DAG, "a\nb"), "invalid_id", "control characters"),
    (task_pod("   ", RUN), "invalid_id", "is empty"),
    (task_pod(DAG, RUN, annotations={labels.SIZE: "lots"}), "invalid_size", labels.SIZE),
    (task_pod(DAG, RUN, annotations={labels.SIZE: "0"}), "invalid_size", "larger than zero"),
    (task_pod(DAG, RUN, annotations={labels.SIZE: "11Gi"}), "size_over_maximum", "over the configured maximum 10Gi"),
    (task_pod(DAG, RUN, annotations={labels.STORAGE_CLASS: " "}), "invalid_storage_class", labels.STORAGE_CLASS),
], ids=["long-run-id", "control-char", "empty-dag-id", "size-not-a-quantity", "size-zero", "size-over-max",
        "blank-class"])
def test_invalid_ids_and_sizes_are_denied_with_a_message_and_nothing_is_provisioned(
        pod: dict[str, Any], reason: str, words: str) -> None:
    fake = FakeProvisioner()
    verdict = handler(fake).handle(request(pod)).verdict
    assert (verdict.allowed, verdict.reason, verdict.code, verdict.retriable) == (False, reason, 422, False)
    assert verdict.message.startswith("leoflow-staging: ") and words in verdict.message
    assert fake.calls == []


def test_missing_ids_are_denied_naming_the_key() -> None:
    pod = task_pod(DAG, RUN)
    del pod["metadata"]["annotations"][labels.RUN_ID]
    del pod["metadata"]["labels"][labels.RUN_ID]
    fake = FakeProvisioner()
    verdict = handler(fake).handle(request(pod)).verdict
    assert (verdict.allowed, verdict.reason, verdict.code) == (False, "missing_id", 422)
    assert labels.RUN_ID in verdict.message and fake.calls == []


@pytest.mark.parametrize(("pod", "reason", "words"), [
    (task_pod(DAG, RUN, volumes=[{"name": labels.VOLUME_NAME, "emptyDir": {}}]), "conflict",
     f"volume named {labels.VOLUME_NAME!r}"),
    (task_pod(DAG, RUN, containers=[{"name": "task", "image": "i", "volumeMounts": [
        {"name": "scratch", "mountPath": labels.MOUNT_PATH}]}], volumes=[{"name": "scratch", "emptyDir": {}}]),
     "conflict", f"mounts volume 'scratch' at {labels.MOUNT_PATH}"),
    (task_pod(DAG, RUN, volumes=[{"name": "theirs", "persistentVolumeClaim": {"claimName": pvc_name(DAG, "other")}}]),
     "other_runs_pvc", pvc_name(DAG, "other")),
], ids=["volume-name", "mount-path", "another-runs-pvc"])
def test_the_patch_is_planned_before_side_effects_so_a_conflict_never_reaches_ensure(
        pod: dict[str, Any], reason: str, words: str) -> None:
    fake = FakeProvisioner()
    out = handler(fake).handle(request(pod))
    assert (out.verdict.allowed, out.verdict.reason, out.verdict.code) == (False, reason, 403)
    assert words in out.verdict.message and out.verdict.message.startswith("leoflow-staging: ")
    assert fake.calls == []  # neither ensure nor choose_class: nothing created, nothing recorded
    assert out.intent is not None and out.intent.pvc_name == PVC


# -- admitted ------------------------------------------------------------------------------------------------------

def test_an_opted_in_pod_is_patched_with_its_runs_claim_after_ensure() -> None:
    fake = FakeProvisioner(created=True)
    out = handler(fake).handle(request(task_pod(DAG, RUN, annotations={labels.SIZE: "5Gi"})))
    assert (out.verdict.allowed, out.verdict.reason) == (True, "patched_new_pvc")
    ours = {"name": labels.VOLUME_NAME, "persistentVolumeClaim": {"claimName": PVC}}
    assert volume_op(out.verdict)["value"] == [ours]
    [(what, namespace, intent)] = fake.calls
    assert (what, namespace) == ("ensure", "team-a")
    assert (intent.dag_id, intent.run_id, intent.pvc_name, intent.size) == (DAG, RUN, PVC, "5Gi")
    assert out.intent == intent and out.ensured == Ensured(PVC, created=True, storage_class="nfs", pvc_uid="pvc-uid-1")


def test_the_warm_path_is_patched_the_same_with_its_own_reason() -> None:
    cold = handler(FakeProvisioner(created=True)).handle(request()).verdict
    warm = handler(FakeProvisioner(created=False)).handle(request()).verdict
    assert (warm.allowed, warm.reason) == (True, "patched")
    assert warm.patch == cold.patch


def test_a_created_event_on_the_cold_path_only() -> None:
    events: list[claim_events.ClaimEvent] = []
    handler(FakeProvisioner(created=True), events=events).handle(request(task_pod(DAG, RUN)))  # generateName
    handler(FakeProvisioner(created=False), events=events).handle(request())
    handler(FakeProvisioner(created=True), events=events).handle(request(dry_run=True))
    [event] = events
    assert (event.namespace, event.pvc_name, event.pvc_uid, event.reason) == (
        "team-a", PVC, "pvc-uid-1", "StagingVolumeCreated")
    assert "by pod task-*" in event.note and repr(RUN) in event.note


def test_the_creating_admission_carries_the_class_warnings_and_hands_the_claim_to_the_watch() -> None:
    created: list[tuple[str, Ensured]] = []
    warning = "leoflow-staging: class nfs (nfs.csi.k8s.io) ignores the requested size 1Gi"
    cold = AdmissionHandler(provisioner=FakeProvisioner(created=True, warnings=(warning,)), sizes=SIZES,
                            budget=BUDGET, on_created=lambda ns, e: created.append((ns, e))).handle(request())
    assert cold.verdict.warnings == (warning,)
    assert encode_response("review-uid", cold.verdict)["response"]["warnings"] == [warning]
    warm = AdmissionHandler(provisioner=FakeProvisioner(created=False), sizes=SIZES, budget=BUDGET,
                            on_created=lambda ns, e: created.append((ns, e))).handle(request())
    assert warm.verdict.warnings == () and "warnings" not in encode_response("u", warm.verdict)["response"]
    assert [(ns, e.pvc_uid) for ns, e in created] == [("team-a", "pvc-uid-1")]  # the cold path only


def test_a_dry_run_only_chooses_the_class_and_creates_nothing() -> None:
    fake = FakeProvisioner()
    out = handler(fake).handle(request(dry_run=True))
    assert (out.verdict.allowed, out.verdict.reason) == (True, "patched_dry_run")
    assert volume_op(out.verdict)["value"][0]["persistentVolumeClaim"] == {"claimName": PVC}
    assert [what for what, _, _ in fake.calls] == ["choose_class"] and out.ensured is None


def test_a_dry_run_is_denied_as_the_real_one_would_be_when_no_class_fits() -> None:
    no_class = deny("no_rwx_class", "leoflow-staging: no ReadWriteMany StorageClass is available")
    fake = FakeProvisioner(error=Denied(no_class))
    out = handler(fake).handle(request(dry_run=True))
    assert out.verdict is no_class
    assert [what for what, _, _ in fake.calls] == ["choose_class"]


# -- adapter errors ------------------------------------------------------------------------------------------------

ERRORS: list[tuple[type[StagingError], str, int, bool]] = [
    (DatabaseUnavailable, "database_unavailable", 503, True),
    (DataRejected, "database_rejected", 422, False),
    (SchemaError, "database_schema", 503, True),
    (KubeUnavailable, "kubernetes_unavailable", 503, True),
    (KubeForbidden, "kubernetes_refused", 403, False),
]


@pytest.mark.parametrize(("error", "reason", "code", "retriable"), ERRORS, ids=[e[1] for e in ERRORS])
def test_each_adapter_error_maps_to_its_denial(error: type[StagingError], reason: str, code: int,
                                               retriable: bool) -> None:
    fake = FakeProvisioner(error=error("the adapter's words"))
    out = handler(fake).handle(request())
    assert (out.verdict.allowed, out.verdict.reason, out.verdict.code, out.verdict.retriable) == (
        False, reason, code, retriable)
    assert out.verdict.message.startswith("leoflow-staging: ") and "the adapter's words" in out.verdict.message
    assert out.verdict.patch is None and out.intent is not None and out.ensured is None
    assert ("Retry" in out.verdict.message) == (reason in ("database_unavailable", "kubernetes_unavailable"))


@pytest.mark.parametrize("verdict", [
    deny("reclaiming", "leoflow-staging: being reclaimed; retry", code=409, retriable=True),
    deny("pvc_not_ours", "leoflow-staging: not ours"),
    deny("timeout", "leoflow-staging: ran out of time", code=504, retriable=True),
], ids=lambda v: v.reason)
def test_a_denied_verdict_from_the_provisioner_is_the_answer_as_it_is(verdict: Verdict) -> None:
    out = handler(FakeProvisioner(error=Denied(verdict))).handle(request())
    assert out.verdict is verdict and out.intent is not None


def test_an_unexpected_error_is_not_swallowed_by_the_handler() -> None:
    # The HTTP shell answers it with a retriable 500 denial (tests/unit/test_app.py); the handler never hides it.
    with pytest.raises(RuntimeError, match="boom"):
        handler(FakeProvisioner(error=RuntimeError("boom"))).handle(request())


@given(st.sampled_from(ERRORS), st.text(max_size=200), st.booleans(),
       st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=36))
def test_any_adapter_error_is_a_denial_in_the_verdict_shape(case: tuple[type[StagingError], str, int, bool],
                                                             words: str, dry_run: bool, uid: str) -> None:
    error, reason, code, retriable = case
    out = handler(FakeProvisioner(error=error(words))).handle(request(dry_run=dry_run))
    verdict = out.verdict
    assert verdict == Verdict(allowed=False, reason=reason, message=verdict.message, code=code, retriable=retriable)
    assert verdict.message.startswith("leoflow-staging: ") and words in verdict.message
    assert [f.name for f in dataclasses.fields(verdict)] == [
        "allowed", "reason", "message", "code", "patch", "warnings", "retriable"]  # no uid: the envelope's
    response = encode_response(uid, verdict)["response"]
    assert response == {"uid": uid, "allowed": False,
                        "status": {"code": code, "message": verdict.message, "reason": response["status"]["reason"]}}


# -- the time budget -----------------------------------------------------------------------------------------------

def test_the_deadline_starts_when_the_request_arrived() -> None:
    fake = FakeProvisioner()
    arrived = time.monotonic() - 3.0
    handler(fake).handle(request(), arrived=arrived)
    [deadline] = fake.deadlines
    assert deadline.started == arrived and deadline.budget == BUDGET
    assert BUDGET - 3.0 - 1.0 < deadline.remaining() <= BUDGET - 3.0


def test_without_an_arrival_the_deadline_starts_now() -> None:
    fake = FakeProvisioner()
    before = time.monotonic()
    handler(fake).handle(request())
    [deadline] = fake.deadlines
    assert before <= deadline.started <= time.monotonic()
    assert BUDGET - 1.0 < deadline.remaining() <= BUDGET


def test_an_arrival_older_than_the_budget_leaves_ensure_no_time() -> None:
    fake = FakeProvisioner()
    handler(fake).handle(request(), arrived=time.monotonic() - BUDGET - 1.0)
    [deadline] = fake.deadlines
    assert deadline.remaining() < 0
    with pytest.raises(Denied) as refused:
        deadline.check("anything", 0.0)
    assert (refused.value.verdict.reason, refused.value.verdict.code) == ("timeout", 504)


@pytest.mark.parametrize("dry_run", [False, True], ids=["ensure", "dry-run"])
def test_a_late_request_is_a_retriable_timeout_denial(dry_run: bool) -> None:
    fake = FakeProvisioner()
    fake.check_deadline = True
    out: Outcome = handler(fake).handle(request(dry_run=dry_run), arrived=time.monotonic() - BUDGET - 1.0)
    assert (out.verdict.allowed, out.verdict.reason, out.verdict.code, out.verdict.retriable) == (
        False, "timeout", 504, True)
    assert f"budget {BUDGET:.1f}s" in out.verdict.message


class SharedRowProvisioner(FakeProvisioner):
    """A run recorded in the shared-claim mode (its row wins over the installation's setting)."""

    def ensure(self, namespace: str, intent: StagingIntent, deadline: Deadline) -> Ensured:
        self._called("ensure", namespace, intent, deadline)
        return Ensured(intent.pvc_name, created=False, storage_class="nfs", shared_claim="team-staging")


def test_a_run_recorded_in_the_shared_mode_keeps_its_directory_after_the_setting_changed() -> None:
    with_image = AdmissionHandler(provisioner=SharedRowProvisioner(), sizes=SIZES, budget=BUDGET, image="img:1")
    verdict = with_image.handle(request()).verdict
    [volume] = volume_op(verdict)["value"]  # the pod had no volumes: the list is added whole
    assert verdict.allowed and volume["persistentVolumeClaim"]["claimName"] == "team-staging"
    assert any(op["path"] == "/spec/initContainers" for op in verdict.patch or [])
    without = AdmissionHandler(provisioner=SharedRowProvisioner(), sizes=SIZES, budget=BUDGET).handle(request())
    assert not without.verdict.allowed and without.verdict.reason == "no_image"  # a clear denial, not a crash
    assert "LEOFLOW_STAGING_IMAGE" in without.verdict.message
