"""The shared-claim mode against the real kube-apiserver and PostgreSQL: admission records the run's directory on
the namespace's shared claim, the GC reclaims it through cleanup pods, with the claim protocol's guards.

No kubelet runs in this control plane, so a cleanup pod never runs here: where a test needs its outcome, it writes
the pod's status as the kubelet would (the status subresource, the termination message the cleanup writes). The
cleanup itself runs for real on the node (tests/node/test_shared_claim.py); its filesystem rules are unit-tested
(tests/unit/test_run_directory.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from devenv.webhook import TEST_WEBHOOK_LABEL
from gc_job.directory_reclaim import DirectoryReclaimer
from gc_job.plan import GcPolicy
from shared import labels
from shared.db.inventory import load_inventory
from shared.kube import make_api_client
from shared.kube.cleanup_api import CleanupKubeApi
from shared.naming import pvc_name
from shared.settings import RunsTable
from shared.volumes import DeleteReason, VolumeState
from tests.e2e.conftest import rows_for
from tests.e2e.gc_support import T0, Bench
from tests.support.helm import apply, render
from tests.support.orchestrator import set_run
from tests.support.pods import task_pod
from tests.support.webhook import WebhookProcess
from webhook.inventory_metrics import inventory_metrics
from webhook.verdicts import Denied

pytestmark = pytest.mark.e2e
SHARED = "team-staging"
IMAGE = "leoflow-staging:test"


@pytest.fixture
def shared(bench: Bench, core: client.CoreV1Api) -> Bench:
    core.create_namespaced_persistent_volume_claim(bench.namespace, {
        "metadata": {"name": SHARED},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}},
                 "storageClassName": "static-nfs"}})
    bench.provisioner().shared_claim = SHARED
    return bench


def _reclaimer(bench: Bench, kubeconfig: str, *, wait: float = 1.0) -> DirectoryReclaimer:
    runs = RunsTable()
    return DirectoryReclaimer(
        engine=bench.engine, kube=bench.kube, runs=runs, clock=bench.clock, image=IMAGE, wait=wait, poll=0.2,
        policy=GcPolicy(failed_ttl=bench.ttl, success_states=runs.success_states, failed_states=runs.failed_states,
                        adopt_min_age=dt.timedelta(0)),
        pods=CleanupKubeApi(make_api_client(kubeconfig), timeout=10, instance=bench.kube.instance))


def _cleanup_pods(core: client.CoreV1Api, namespace: str) -> list[Any]:
    return core.list_namespaced_pod(namespace, label_selector=labels.CLEANUP).items


def _finish(core: client.CoreV1Api, pod: Any, *, code: int, result: dict[str, Any]) -> None:
    """What the kubelet writes when the cleanup container exits: the phase and its termination message."""
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": {
        "phase": "Succeeded" if code == 0 else "Failed",
        "containerStatuses": [{"name": "cleanup", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
                               "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else
                                                        "Error", "message": json.dumps(result)}}}]}})


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)  # type: ignore[attr-defined]
            and r.fields.get("event") == event]  # type: ignore[attr-defined]


def test_a_runs_directory_is_recorded_on_the_shared_claim_and_reattached(shared: Bench, core: client.CoreV1Api) -> None:
    first = shared.admit("etl", "r1")
    assert first == pvc_name("etl", "r1") and shared.admit("etl", "r1") == first  # retries re-attach
    shared.admit("etl", "r2")
    rows = shared.rows()
    claim_uid = core.read_namespaced_persistent_volume_claim(SHARED, shared.namespace).metadata.uid
    assert [(r.mode, r.shared_claim, r.pvc_uid, r.directory) for r in rows] == [
        ("shared", SHARED, claim_uid, pvc_name("etl", "r1")), ("shared", SHARED, claim_uid, pvc_name("etl", "r2"))]
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(shared.namespace).items] == [SHARED]


def test_without_the_shared_claim_the_pod_is_refused_with_the_fix(bench: Bench) -> None:
    bench.provisioner().shared_claim = SHARED
    with pytest.raises(Denied) as denied:
        bench.admit("etl", "r1")
    assert denied.value.verdict.reason == "no_shared_claim"
    assert f"namespace {bench.namespace!r} has no PVC of that name" in denied.value.verdict.message
    assert bench.rows() == []


def test_a_run_recorded_with_its_own_claim_keeps_it_after_the_mode_changes(shared: Bench) -> None:
    shared.provisioner().shared_claim = None
    shared.admit("etl", "old")
    shared.provisioner().shared_claim = SHARED
    shared.admit("etl", "old")
    [row] = shared.rows()
    assert row.mode == "claim" and row.shared_claim is None


def test_success_removes_the_directory_through_a_cleanup_pod_and_records_its_bytes(
        shared: Bench, core: client.CoreV1Api, kubeconfig: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    directory = shared.admit("etl", "ok")
    set_run(shared.engine, "etl", "ok", "success", T0)
    directories = _reclaimer(shared, str(kubeconfig))
    assert shared.sweep(directories=directories) == 0
    [row] = shared.rows()
    assert row.state is VolumeState.RECLAIMING  # the pod has not run: the next sweep goes on
    [pod] = _cleanup_pods(core, shared.namespace)
    [c] = pod.spec.containers
    assert f"--directory={directory}" in c.command and c.image == IMAGE
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == SHARED
    [cleaning] = _events(caplog, "cleaning")
    assert cleaning["pvc"] == directory and "next sweep" in cleaning["detail"]
    with pytest.raises(Denied) as denied:  # a re-run meanwhile: refused, retriably, never a half-removed directory
        shared.admit("etl", "ok")
    assert denied.value.verdict.reason == "reclaiming" and denied.value.verdict.retriable
    _finish(core, pod, code=0, result={"status": "removed", "bytes": 64 << 20, "files": 3, "resumed": False})
    assert shared.sweep(directories=directories) == 0
    [row] = shared.rows()
    assert (row.state, row.delete_reason, row.bytes_freed) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED,
                                                               64 << 20)
    [line] = _events(caplog, "reclaimed")
    assert line["bytes_freed"] == 64 << 20 and line["reason"] == "run_succeeded"
    inventory = load_inventory(shared.engine, RunsTable(), now=T0)  # what /metrics exports
    assert inventory.reclaimed_bytes == {"run_succeeded": 64 << 20} and inventory.reclaims == {"run_succeeded": 1}
    freed = next(f for f in inventory_metrics(inventory) if f.name == "leoflow_staging_reclaimed_bytes")
    assert [(s.labels, s.value) for s in freed.samples if s.name.endswith("_total")] == [
        ({"reason": "run_succeeded"}, float(64 << 20))]
    assert all(p.metadata.deletion_timestamp for p in _cleanup_pods(core, shared.namespace))  # deleted
    assert shared.admit("etl", "ok") == directory  # a re-run starts on a fresh directory, recorded anew
    assert [r.state for r in shared.rows()] == [VolumeState.DELETED, VolumeState.ACTIVE]


def test_a_failed_cleanup_pod_is_followed_by_the_next_and_a_refusal_removes_nothing(
        shared: Bench, core: client.CoreV1Api, kubeconfig: Any) -> None:
    shared.admit("etl", "x")
    set_run(shared.engine, "etl", "x", "success", T0)
    directories = _reclaimer(shared, str(kubeconfig), wait=0.5)
    shared.sweep(directories=directories)
    [pod] = _cleanup_pods(core, shared.namespace)
    _finish(core, pod, code=137, result={})  # killed mid-way
    set_run(shared.engine, "etl", "x", "running", None)  # a run that comes back now cannot abort a started cleanup
    shared.sweep(directories=directories)
    pods = sorted(_cleanup_pods(core, shared.namespace), key=lambda p: p.metadata.name)
    assert [p.metadata.name[-2:] for p in pods] == ["-0", "-1"]
    assert shared.rows()[0].state is VolumeState.RECLAIMING
    _finish(core, pods[1], code=4, result={"status": "refused", "error": "the marker names dag 'y'"})
    assert shared.sweep(directories=directories) == 1  # a failure the on-call sees
    assert shared.rows()[0].state is VolumeState.RECLAIMING and len(_cleanup_pods(core, shared.namespace)) == 2


def test_a_running_task_pod_of_the_directory_and_a_returning_run_keep_the_files(
        shared: Bench, core: client.CoreV1Api, kubeconfig: Any) -> None:
    directory = shared.admit("etl", "busy")
    set_run(shared.engine, "etl", "busy", "success", T0)
    task = core.create_namespaced_pod(shared.namespace, {
        "metadata": {"name": "busy-task", "labels": {labels.DIRECTORY: directory}},
        "spec": {"containers": [{"name": "t", "image": "x"}]}})
    directories = _reclaimer(shared, str(kubeconfig))
    shared.sweep(directories=directories)
    assert _cleanup_pods(core, shared.namespace) == []  # Pending counts as using it
    core.patch_namespaced_pod_status(task.metadata.name, shared.namespace, {"status": {"phase": "Succeeded"}})
    set_run(shared.engine, "etl", "busy", "running", None)  # cleared and re-run before any cleanup started
    shared.sweep(directories=directories)
    assert _cleanup_pods(core, shared.namespace) == []
    [row] = shared.rows()
    assert row.state is VolumeState.ACTIVE and "run came back" in (row.detail or "")


def _create(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> str | None:
    """None when the apiserver admits the pod (a dry run: nothing is stored), else its refusal."""
    try:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    except client.ApiException as exc:
        return str(exc.body)
    return None


def _mounting(name: str, *, opted_in: bool, directory: str | None, sub_path: str | None, inspect: bool = False,
              read_only: bool = False) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": "data", "mountPath": "/staging", "readOnly": read_only}
    if sub_path is not None:
        mount["subPath"] = sub_path
    pod_labels = {labels.OPT_IN: labels.OPT_IN_VALUE} if opted_in else {}
    if inspect:
        pod_labels[labels.INSPECT] = "true"
    if directory is not None:
        pod_labels[labels.DIRECTORY] = directory
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": pod_labels},
            "spec": {"containers": [{"name": "t", "image": "x", "volumeMounts": [mount]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": SHARED}}]}}


def test_the_chart_refuses_any_pod_mounting_the_shared_claim_but_a_runs_own_directory_or_the_gcs_cleanup(
        assets: Any, api: client.ApiClient, core: client.CoreV1Api, kubeconfig: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    release, release_ns, team = f"shared-{tag}", f"rel-{tag}", f"team-{tag}"
    core.create_namespace({"metadata": {"name": release_ns}})
    # Served by this release's policy, and by no test webhook (the session's sees unlabelled namespaces): the opted-in
    # pods here meet the policy alone, as where the chart's webhook would have patched them already.
    core.create_namespace({"metadata": {"name": team, "labels": {labels.INSTANCE: release,
                                                                  TEST_WEBHOOK_LABEL: f"none-{tag}"}}})
    objs = render(assets, namespace=release_ns, release=release,
                  values={"storage": {"mode": "shared", "sharedClaim": {"name": SHARED}}})
    assert isinstance(objs, list)
    policy = [o for o in objs if o["kind"].startswith("ValidatingAdmissionPolicy")
              and o["metadata"]["name"].endswith("-shared-claim")]
    gc_rbac = [o for o in objs if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
               and o["metadata"]["name"].endswith("-gc")]
    assert len(policy) == 2 and len(gc_rbac) == 3
    mine, other = pvc_name("etl", "r1"), pvc_name("etl", "r2")
    as_gc = config.new_client_from_config(config_file=str(kubeconfig))
    as_gc.set_default_header("Impersonate-User", f"system:serviceaccount:{release_ns}:{release}-leoflow-staging-gc")
    cases = {  # pod -> refused?
        "own-directory": (_mounting("own", opted_in=True, directory=mine, sub_path=mine), False),
        "not-opted-in": (_mounting("plain", opted_in=False, directory=mine, sub_path=mine), True),
        "whole-claim": (_mounting("whole", opted_in=True, directory=mine, sub_path=None), True),
        "other-directory": (_mounting("other", opted_in=True, directory=mine, sub_path=other), True),
        "no-label": (_mounting("nolabel", opted_in=True, directory=None, sub_path=mine), True),
        "inspect-read-only": (_mounting("look", opted_in=False, directory=mine, sub_path=mine, inspect=True,
                                        read_only=True), False),
        "inspect-writable": (_mounting("lookw", opted_in=False, directory=mine, sub_path=mine, inspect=True), True),
        "inspect-whole-claim": (_mounting("lookall", opted_in=False, directory=mine, sub_path=None, inspect=True,
                                          read_only=True), True),
    }
    try:
        for obj in policy + gc_rbac:
            apply(api, obj)
        # The GC's cleanup pod (created by the GC's ServiceAccount) mounts the whole claim.
        cleanup = _mounting("cleanup", opted_in=False, directory=None, sub_path=None)
        gc_core = client.CoreV1Api(as_gc)
        # The apiserver takes the new policy, and the GC's new RBAC, a moment later (informers): wait for both.
        deadline = time.monotonic() + 60
        while True:
            seen = {case: _create(core, team, pod) for case, (pod, _) in cases.items()}
            seen["gc-cleanup"] = _create(gc_core, team, cleanup)
            wanted = {c: r for c, (_, r) in cases.items()} | {"gc-cleanup": False}
            if {case: m is not None for case, m in seen.items()} == wanted:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
        assert f"mounts the shared staging claim {SHARED} itself" in str(seen["whole-claim"])
        # Elsewhere (a namespace this installation does not serve) the policy does not apply.
        assert _create(core, release_ns, _mounting("elsewhere", opted_in=False, directory=None, sub_path=None)) is None
    finally:
        admission, rbac = client.AdmissionregistrationV1Api(api), client.RbacAuthorizationV1Api(api)
        for o in policy + gc_rbac:
            name = o["metadata"]["name"]
            with contextlib.suppress(client.ApiException):
                {"ValidatingAdmissionPolicyBinding": admission.delete_validating_admission_policy_binding,
                 "ValidatingAdmissionPolicy": admission.delete_validating_admission_policy,
                 "ClusterRole": rbac.delete_cluster_role, "ClusterRoleBinding": rbac.delete_cluster_role_binding,
                 }.get(o["kind"], lambda _n: None)(name)
        core.delete_namespace(team)
        core.delete_namespace(release_ns)


@pytest.fixture(scope="module")
def server(webhook_db: str, kubeconfig: Any, api: client.ApiClient,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookProcess]:
    """A real `leoflow-staging serve` in the shared-claim mode, for namespaces labelled for it."""
    proc = WebhookProcess(workdir=tmp_path_factory.mktemp("shared-webhook"), env={
        "LEOFLOW_STAGING_DATABASE_URL": webhook_db, "LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig),
        "LEOFLOW_STAGING_WORKERS": "1", "LEOFLOW_STAGING_SHARED_CLAIM": SHARED, "LEOFLOW_STAGING_IMAGE": IMAGE})
    proc.start()
    proc.register(api, "leoflow-staging-shared", namespace_label="shared")
    try:
        yield proc
    finally:
        client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration("leoflow-staging-shared")
        proc.stop()


def test_the_served_webhook_mounts_the_runs_directory_and_refuses_where_the_claim_is_missing(
        server: WebhookProcess, core: client.CoreV1Api, db: Any) -> None:
    with_claim, without = (f"t-sh-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for name in (with_claim, without):
        core.create_namespace({"metadata": {"name": name, "labels": {TEST_WEBHOOK_LABEL: "shared"}}})
    try:
        core.create_namespaced_persistent_volume_claim(with_claim, {
            "metadata": {"name": SHARED}, "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                                                   "resources": {"requests": {"storage": "1Ti"}}}})
        pod = core.create_namespaced_pod(with_claim, task_pod("etl", "-r1"))
        directory = pvc_name("etl", "-r1")
        assert pod.metadata.labels[labels.DIRECTORY] == directory
        prepare, *_ = pod.spec.init_containers or []
        assert prepare.name == labels.PREPARE_CONTAINER and prepare.image == IMAGE
        assert "--run-id=-r1" in prepare.command and prepare.security_context.run_as_user == 0
        [mount] = [m for m in pod.spec.containers[0].volume_mounts if m.name == labels.VOLUME_NAME]
        assert (mount.mount_path, mount.sub_path) == ("/staging", directory)
        [row] = rows_for(db, with_claim)
        assert (row["mode"], row["shared_claim"], row["pvc_name"]) == ("shared", SHARED, directory)
        # The requested-bytes inventory does not count the shared claim's size once per run.
        inventory = load_inventory(db, RunsTable(), now=dt.datetime.now(dt.UTC))
        assert inventory.requested_bytes().get((with_claim, "nfs"), 0.0) == 0.0
        for dry_run in ("All", None):  # a dry run (helm test, check-admission) checks the claim too
            with pytest.raises(client.ApiException) as refused:
                core.create_namespaced_pod(without, task_pod("etl", "r2"), dry_run=dry_run)
            assert f"namespace {without!r} has no PVC of that name" in str(refused.value.body)
        core.create_namespaced_pod(with_claim, task_pod("etl", "r3"), dry_run="All")  # passes where it exists
    finally:
        for name in (with_claim, without):
            core.delete_namespace(name)


def test_an_operators_reclaim_of_a_directory_starts_its_cleanup(
        shared: Bench, core: client.CoreV1Api, kubeconfig: Any) -> None:
    from gc_job.operator_reclaim import reclaim_now
    from gc_job.results import Outcome

    shared.admit("etl", "done")
    set_run(shared.engine, "etl", "done", "failed", T0)  # failed an hour ago: the TTL keeps it, an operator frees it
    [row] = shared.rows()
    directories = _reclaimer(shared, str(kubeconfig), wait=0.5)
    policy = GcPolicy(failed_ttl=shared.ttl, success_states=("success",), failed_states=("failed",))
    result = reclaim_now(row, None, engine=shared.engine, kube=shared.kube, runs=RunsTable(), policy=policy,
                         clock=shared.clock, settle_seconds=1, delete_finished_pods=True, directories=directories)
    assert result.outcome is Outcome.CLEANING, result
    [pod] = _cleanup_pods(core, shared.namespace)
    _finish(core, pod, code=0, result={"status": "removed", "bytes": 8192, "files": 1, "resumed": False})
    shared.sweep(directories=directories)
    [row] = shared.rows()
    assert (row.state, row.delete_reason, row.bytes_freed) == (VolumeState.DELETED, DeleteReason.OPERATOR_REQUEST,
                                                               8192)


@pytest.mark.parametrize("state, ended, reason", [
    ("success", T0, DeleteReason.RUN_SUCCEEDED),
    ("failed", T0 - dt.timedelta(hours=25), DeleteReason.TTL_EXPIRED),
    (None, None, DeleteReason.ORPHANED),
])
def test_one_installation_reclaims_a_claim_and_a_directory_for_the_same_reason_in_one_sweep(
        shared: Bench, core: client.CoreV1Api, kubeconfig: Any, rwx_class: str, state: str | None,
        ended: dt.datetime | None, reason: DeleteReason) -> None:
    shared.provisioner().shared_claim = None
    claim = shared.admit("etl", "own")  # recorded with its own claim, before the mode changed
    shared.provisioner().shared_claim = SHARED
    directory = shared.admit("etl", "dir")
    for run in ("own", "dir"):
        if state is not None:
            set_run(shared.engine, "etl", run, state, ended)
    directories = _reclaimer(shared, str(kubeconfig), wait=0.5)
    shared.sweep(directories=directories)  # the claim is deleted; the directory's cleanup pod is created
    [pod] = _cleanup_pods(core, shared.namespace)
    _finish(core, pod, code=0, result={"status": "removed", "bytes": 4096, "files": 1, "resumed": False})
    shared.sweep(directories=directories)
    rows = {r.pvc_name: r for r in shared.rows()}
    assert {(r.mode, r.state, r.delete_reason) for r in rows.values()} == {
        ("claim", VolumeState.DELETED, reason), ("shared", VolumeState.DELETED, reason)}
    assert rows[directory].bytes_freed == 4096 and rows[claim].bytes_freed is None
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(shared.namespace).items] == [SHARED]


def test_with_a_class_the_webhook_creates_the_shared_claim_once_and_the_gc_leaves_it_alone(
        bench: Bench, core: client.CoreV1Api, kubeconfig: Any, rwx_class: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    provisioner = bench.provisioner()
    provisioner.shared_claim, provisioner.shared_class, provisioner.shared_size = SHARED, rwx_class, "2Ti"
    bench.admit("etl", "a")
    bench.admit("etl", "b")
    [claim] = core.list_namespaced_persistent_volume_claim(bench.namespace).items
    assert claim.metadata.name == SHARED and claim.spec.storage_class_name == rwx_class
    assert claim.spec.access_modes == ["ReadWriteMany"] and claim.spec.resources.requests["storage"] == "2Ti"
    assert claim.metadata.labels[labels.SHARED_CLAIM] == "true"
    assert claim.metadata.labels[labels.INSTANCE] == bench.kube.instance
    assert {r.pvc_uid for r in bench.rows()} == {claim.metadata.uid}
    set_run(bench.engine, "etl", "a", "running")
    set_run(bench.engine, "etl", "b", "running")
    assert bench.sweep(directories=_reclaimer(bench, str(kubeconfig))) == 0
    assert not _events(caplog, "stray_pvc") and not _events(caplog, "adopted")  # not a run's claim, not adopted
    assert core.read_namespaced_persistent_volume_claim(SHARED, bench.namespace).metadata.uid == claim.metadata.uid


def test_an_inspect_pod_of_the_directory_is_deleted_not_waited_for(
        shared: Bench, core: client.CoreV1Api, kubeconfig: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    directory = shared.admit("etl", "looked")
    set_run(shared.engine, "etl", "looked", "success", T0)
    look = core.create_namespaced_pod(shared.namespace, _mounting(
        "look", opted_in=False, directory=directory, sub_path=directory, inspect=True, read_only=True))
    core.patch_namespaced_pod_status(look.metadata.name, shared.namespace, {"status": {"phase": "Running"}})
    shared.sweep(directories=_reclaimer(shared, str(kubeconfig), wait=0.5))
    [gone] = _events(caplog, "inspect_pod_deleted")
    assert (gone["pod"], gone["phase"], gone["pvc"]) == ("look", "Running", directory)
    assert len(_cleanup_pods(core, shared.namespace)) == 1  # the cleanup started without waiting for it
