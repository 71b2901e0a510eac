"""Old names keep working after the longer hash (issue 16.3), through the real apiserver, webhook and PostgreSQL.

A claim and row "made by old code" are made here the way the earlier version made them: a PVC with the run's
labels and annotations under its 40-bit name, and an active row under the same name with the PVC's uid.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest
import sqlalchemy as sa
from kubernetes import client

from leoflow_staging.cli import main as cli_main
from shared.db import volumes_repo
from shared.db.migrate import upgrade
from shared.kube import KubeApi, make_api_client
from shared.naming import legacy_pvc_name, pvc_name
from shared.objects import ClaimInfo, ClaimSpec
from shared.volumes import DeleteReason, NewVolume, VolumeState
from tests.e2e.conftest import pod_dict, rows_for, staging_pvc_of, wait_until_gone
from tests.e2e.gc_support import Bench, own_kube
from tests.support.orchestrator import create_runs_table, set_run
from tests.support.pods import admission_review, task_pod
from tests.support.webhook import WebhookProcess
from webhook.handler import AdmissionHandler
from webhook.intent import SizePolicy
from webhook.patching import plan_patch
from webhook.review import parse_review
from webhook.verdicts import Verdict

pytestmark = pytest.mark.e2e

RUN = "manual__2026-05-23T10:00:00+00:00"
LONG_HASH = re.compile(r"^leoflow-staging-[a-z0-9-]*-[a-z2-7]{26}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _old_claim(kube: KubeApi, namespace: str, dag_id: str, run_id: str, storage_class: str) -> ClaimInfo:
    """The PVC the earlier version created for the run: its labels and annotations, the 40-bit name."""
    return kube.create_claim(ClaimSpec(namespace=namespace, name=legacy_pvc_name(dag_id, run_id), dag_id=dag_id,
                                       run_id=run_id, storage_class=storage_class, size="5Gi"))


def _old_row(engine: sa.Engine, claim: ClaimInfo, dag_id: str, run_id: str) -> None:
    """The row the earlier version recorded right after creating the PVC."""
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, NewVolume(namespace=claim.namespace, pvc_name=claim.name, pvc_uid=claim.uid,
                                                   dag_id=dag_id, run_id=run_id, storage_class="nfs", size="5Gi"),
                                   now=_now())


def _pod(core: client.CoreV1Api, api: client.ApiClient, namespace: str, dag_id: str, run_id: str,
         name: str) -> dict[str, object]:
    return pod_dict(api, core.create_namespaced_pod(namespace, task_pod(dag_id, run_id, name=name)))


@pytest.fixture
def kube(kubeconfig: Path) -> KubeApi:
    return KubeApi(make_api_client(str(kubeconfig)), timeout=10)


def test_a_run_keeps_its_legacy_claim_and_row_and_the_gc_still_reclaims_them(
        webhook: WebhookProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str, db: sa.Engine,
        kube: KubeApi, rwx_class: str, capsys: pytest.CaptureFixture[str]) -> None:
    old = _old_claim(kube, namespace, "etl", RUN, rwx_class)
    _old_row(db, old, "etl", RUN)
    assert old.name != pvc_name("etl", RUN)

    pods = [_pod(core, api, namespace, "etl", RUN, f"task-{i}") for i in range(2)]  # new pods of the old run
    for pod in pods:
        assert staging_pvc_of(pod) == old.name
        [vol] = [v for v in pod["spec"]["volumes"] if v["name"] == "leoflow-staging"]
        assert vol["persistentVolumeClaim"]["claimName"] == old.name
    assert [c.metadata.uid for c in core.list_namespaced_persistent_volume_claim(namespace).items] == [old.uid]
    assert [(r["pvc_name"], r["pvc_uid"], r["state"]) for r in rows_for(db, namespace)] == \
        [(old.name, old.uid, "active")]

    # The CLI finds the run's volume by its ids, whatever its name.
    assert cli_main(["--database-url", db.url.render_as_string(hide_password=False), "volumes", "--dag", "etl",
                     "--run", RUN, "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["namespace"], v["pvc"], v["state"]) for v in listed if v["namespace"] == namespace] == \
        [(namespace, old.name, "active")]

    fresh = _pod(core, api, namespace, "etl", "new-run", "task-new")  # a run that starts now
    assert staging_pvc_of(fresh) == pvc_name("etl", "new-run")
    assert LONG_HASH.match(pvc_name("etl", "new-run"))
    assert pvc_name("etl", "new-run") != legacy_pvc_name("etl", "new-run")

    for pod in [*pods, fresh]:
        core.delete_namespaced_pod(pod["metadata"]["name"], namespace, grace_period_seconds=0)
    create_runs_table(db)
    set_run(db, "etl", RUN, "success", _now())
    set_run(db, "etl", "new-run", "success", _now())
    bench = Bench(engine=db, kube=kube, namespace=namespace, now=_now())
    bench.sweep()
    rows = {r.pvc_name: r for r in bench.rows()}
    assert (rows[old.name].state, rows[old.name].delete_reason) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)
    assert rows[pvc_name("etl", "new-run")].state is VolumeState.DELETED
    wait_until_gone(core, namespace)


def test_a_legacy_claim_without_a_row_is_the_runs_volume(
        webhook: WebhookProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str, db: sa.Engine,
        kube: KubeApi, rwx_class: str) -> None:
    # The earlier version created the PVC and stopped before recording it (or, mid-upgrade, is recording it now).
    old = _old_claim(kube, namespace, "etl", "crashed", rwx_class)
    pod = _pod(core, api, namespace, "etl", "crashed", "task-0")
    assert staging_pvc_of(pod) == old.name
    assert [c.metadata.name for c in core.list_namespaced_persistent_volume_claim(namespace).items] == [old.name]
    assert [(r["pvc_name"], r["pvc_uid"], r["state"], r["dag_id"], r["run_id"]) for r in rows_for(db, namespace)] \
        == [(old.name, old.uid, "active", "etl", "crashed")]


def test_a_legacy_claim_of_another_run_is_never_taken(
        webhook: WebhookProcess, api: client.ApiClient, core: client.CoreV1Api, namespace: str, db: sa.Engine,
        kube: KubeApi, rwx_class: str) -> None:
    # A 40-bit collision, as a hostile author could search for: a PVC of run (other, x) under the legacy name of
    # (etl, b). The new name does not collide, so (etl, b) gets its own volume and theirs is untouched.
    theirs = kube.create_claim(ClaimSpec(namespace=namespace, name=legacy_pvc_name("etl", "b"), dag_id="other",
                                         run_id="x", storage_class=rwx_class, size="1Gi"))
    _old_row(db, theirs, "other", "x")
    pod = _pod(core, api, namespace, "etl", "b", "task-0")
    assert staging_pvc_of(pod) == pvc_name("etl", "b")
    rows = [(r["pvc_name"], r["dag_id"], r["run_id"], r["state"]) for r in rows_for(db, namespace)]
    assert rows == [(theirs.name, "other", "x", "active"), (pvc_name("etl", "b"), "etl", "b", "active")]


@pytest.fixture
def bench(database_url: str, kubeconfig: Path, namespace: str, rwx_class: str) -> Iterator[Bench]:
    engine = sa.create_engine(database_url)
    upgrade(engine)
    create_runs_table(engine)
    yield Bench(engine=engine, kube=own_kube(str(kubeconfig), namespace), namespace=namespace, now=_now())
    engine.dispose()


def test_the_gc_adopts_a_stray_legacy_claim_and_reclaims_it(bench: Bench, core: client.CoreV1Api,
                                                             rwx_class: str) -> None:
    old = _old_claim(bench.kube, bench.namespace, "etl", "stray", rwx_class)
    # The GC's clock after the claim's creationTimestamp (whole seconds): a claim "from the future" is not
    # adopted yet, whatever the adoption grace (the fixture's clock was read before the claim was created).
    bench.now = _now() + dt.timedelta(seconds=1)
    set_run(bench.engine, "etl", "stray", "running")
    bench.sweep()
    [row] = bench.rows()
    assert (row.pvc_name, row.pvc_uid, row.state) == (old.name, old.uid, VolumeState.ACTIVE)  # adopted, kept
    assert bench.admit("etl", "stray") == old.name  # and the run's pods get it
    set_run(bench.engine, "etl", "stray", "success", _now())
    bench.sweep()
    [row] = bench.rows()
    assert (row.state, row.delete_reason) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)
    wait_until_gone(core, bench.namespace)


def test_a_pod_reinvoked_with_its_runs_legacy_claim_is_admitted_unchanged(bench: Bench, rwx_class: str) -> None:
    # reinvocationPolicy: IfNeeded: a pod we already patched with the run's legacy-named claim comes back.
    old = _old_claim(bench.kube, bench.namespace, "etl", "again", rwx_class)
    _old_row(bench.engine, old, "etl", "again")
    handler = AdmissionHandler(provisioner=bench.provisioner(), sizes=SizePolicy("1Gi", "10Gi"), budget=30)
    first = handler.handle(parse_review(admission_review(task_pod("etl", "again"), bench.namespace, uid="u1")))
    assert first.verdict.allowed and first.ensured is not None and first.ensured.pvc_name == old.name
    assert first.verdict.patch is not None
    patched_pod = jsonpatch.apply_patch(task_pod("etl", "again"), first.verdict.patch)
    again = handler.handle(parse_review(admission_review(patched_pod, bench.namespace, uid="u2")))
    assert (again.verdict.allowed, again.verdict.reason, again.verdict.patch) == (True, "patched", None)


def test_a_pod_naming_its_runs_legacy_claim_that_is_gone_is_never_admitted_onto_it(
        bench: Bench, core: client.CoreV1Api, rwx_class: str) -> None:
    # A pod spec copied from an earlier admitted pod still names the run's legacy claim, which the GC has
    # since reclaimed (no claim, no live row): the run gets a claim under the current name, and this pod is
    # refused rather than admitted onto a claim that no longer exists.
    handler = AdmissionHandler(provisioner=bench.provisioner(), sizes=SizePolicy("1Gi", "10Gi"), budget=30)
    legacy = legacy_pvc_name("etl", "copied")
    plan = plan_patch(task_pod("etl", "copied"), legacy)
    assert not isinstance(plan, Verdict)
    stale = jsonpatch.apply_patch(task_pod("etl", "copied"), plan)
    outcome = handler.handle(parse_review(admission_review(stale, bench.namespace, uid="u3")))
    assert not outcome.verdict.allowed and outcome.verdict.patch is None, outcome.verdict
    message = outcome.verdict.message
    assert outcome.verdict.reason == "stale_pvc" and "another name of its own run's staging PVC" in message
    assert outcome.verdict.code == 403 and not outcome.verdict.retriable  # the same pod spec never succeeds
    assert pvc_name("etl", "copied") in outcome.verdict.message  # names the run's volume now
    live = {c.metadata.name for c in core.list_namespaced_persistent_volume_claim(bench.namespace).items}
    assert legacy not in live and pvc_name("etl", "copied") in live  # the run's volume is the current one
    fresh = handler.handle(parse_review(admission_review(task_pod("etl", "copied"), bench.namespace, uid="u4")))
    assert fresh.verdict.allowed and fresh.ensured is not None and fresh.ensured.pvc_name == pvc_name("etl", "copied")
