"""The lifecycle rules and their race safety, on real PostgreSQL and the real control plane."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from shared.db import reclaim_batches
from shared.db.engine import make_engine
from shared.db.locks import single_flight
from shared.kube import KubeApi, make_api_client
from shared.naming import pvc_name
from shared.objects import ClaimSpec, claim_manifest
from shared.settings import RunsTable
from shared.volumes import DeleteReason, VolumeState
from tests.e2e.conftest import wait_until_gone
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import delete_run, set_run

pytestmark = pytest.mark.e2e
H = dt.timedelta(hours=1)


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)  # type: ignore[attr-defined]
            and r.fields.get("event") == event]  # type: ignore[attr-defined]


def test_success_is_reclaimed_at_once_and_logged(bench: Bench, core: client.CoreV1Api,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    pvc = bench.admit("etl", "ok")
    set_run(bench.engine, "etl", "ok", "success", T0)
    assert bench.sweep() == 0
    [row] = bench.rows()
    assert (row.state, row.delete_reason, row.deleted_at) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED, T0)
    assert core.list_namespaced_persistent_volume_claim(bench.namespace).items == []
    [line] = _events(caplog, "reclaimed")
    assert line | {"age_s": None} == {
        "event": "reclaimed", "namespace": bench.namespace, "pvc": pvc, "pvc_uid": row.pvc_uid, "dag_id": "etl",
        "run_id": "ok",
        "reason": "run_succeeded", "run_state": "success", "run_end": T0.isoformat(), "since_run_end_s": 0.0,
        "age_s": None, "detail": "PVC gone; row deleted"}
    [summary] = _events(caplog, "sweep_summary")
    assert summary["reclaimed"] == {"run_succeeded": 1} and summary["failed"] == 0
    json.dumps(line)  # every field serialisable


def test_failed_run_is_kept_for_the_ttl_counted_from_its_end(bench: Bench) -> None:
    bench.now = T0 - 72 * H  # the volume is old ...
    bench.admit("etl", "bad")
    bench.now = T0
    set_run(bench.engine, "etl", "bad", "failed", T0 - 1 * H)  # ... but the run failed only 1 h ago
    assert bench.sweep() == 0
    assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE]
    bench.now = T0 + 23 * H - dt.timedelta(seconds=1)
    bench.sweep()
    assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE]
    bench.now = T0 + 23 * H  # 24 h after the run ended
    bench.sweep()
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.TTL_EXPIRED)]


def test_custom_ttl(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bench.ttl = dt.timedelta(minutes=30)
    bench.admit("etl", "bad")
    set_run(bench.engine, "etl", "bad", "failed", T0 - dt.timedelta(minutes=29))
    bench.sweep()
    assert bench.rows()[0].state is VolumeState.ACTIVE
    [kept] = _events(caplog, "kept_failed_run")  # the on-call's answer to "why is this disk still here?"
    assert kept["run_id"] == "bad" and kept["why"].endswith(f"kept until {(T0 + dt.timedelta(minutes=1)).isoformat()}")
    bench.now = T0 + dt.timedelta(minutes=2)
    bench.sweep()
    assert bench.rows()[0].delete_reason is DeleteReason.TTL_EXPIRED


def test_live_runs_and_failed_runs_without_end_are_kept(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    for run, state in (("q", "queued"), ("r", "running"), ("c", None), ("f", "failed")):
        bench.admit("etl", run)
        set_run(bench.engine, "etl", run, state or "", None)
    bench.now = T0 + 1000 * H
    assert bench.sweep() == 0
    assert {r.state for r in bench.rows()} == {VolumeState.ACTIVE}
    [summary] = _events(caplog, "sweep_summary")
    assert summary["kept"] == 4
    [no_end] = _events(caplog, "kept_without_end_date")
    assert no_end["run_id"] == "f"


def test_orphans_are_reclaimed_on_sight(bench: Bench) -> None:
    bench.admit("gone", "r1")
    set_run(bench.engine, "gone", "r1", "running")
    delete_run(bench.engine, "gone", "r1")
    bench.sweep()
    assert [r.delete_reason for r in bench.rows()] == [DeleteReason.ORPHANED]


def test_dry_run_prints_the_plan_and_changes_nothing(bench: Bench, core: client.CoreV1Api) -> None:
    bench.admit("etl", "ok")
    set_run(bench.engine, "etl", "ok", "success", T0)
    assert bench.sweep(dry_run=True) == 0
    [planned] = [json.loads(line) for line in bench.out.getvalue().splitlines()]
    assert (planned["action"], planned["reason"], planned["run_id"]) == ("reclaim", "run_succeeded", "ok")
    assert bench.rows()[0].state is VolumeState.ACTIVE
    assert len(core.list_namespaced_persistent_volume_claim(bench.namespace).items) == 1


def test_a_pvc_recreated_under_the_same_name_is_never_deleted(bench: Bench, core: client.CoreV1Api) -> None:
    pvc = bench.admit("etl", "ok")
    [row] = bench.rows()
    # Someone deletes the PVC and a new one of the same name appears (not recorded by this row).
    core.delete_namespaced_persistent_volume_claim(pvc, bench.namespace)
    wait_until_gone(core, bench.namespace)
    fresh = bench.kube.create_claim(ClaimSpec(namespace=bench.namespace, name=pvc, dag_id="etl", run_id="ok",
                                              storage_class="x", size="1Gi"))
    set_run(bench.engine, "etl", "ok", "success", T0)
    with pytest.raises(Exception, match="no longer uid"):  # the delete itself is guarded too
        bench.kube.delete_claim(bench.namespace, pvc, uid=str(row.pvc_uid))
    bench.sweep(adopt_min_age=dt.timedelta(days=1))
    assert core.read_namespaced_persistent_volume_claim(pvc, bench.namespace).metadata.uid == fresh.uid
    assert bench.rows()[0].state is VolumeState.DELETED  # the old lifetime is closed


def test_terminating_pvc_names_the_pod_and_the_finalizer_stays(bench: Bench, core: client.CoreV1Api) -> None:
    pvc = bench.admit("etl", "ok")
    core.create_namespaced_pod(bench.namespace, {  # a scheduled pod holds the claim (pvc-protection)
        "metadata": {"name": "holder"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": pvc}}]}})
    set_run(bench.engine, "etl", "ok", "success", T0)
    assert bench.sweep(settle=1.0) == 0
    [row] = bench.rows()
    assert row.state is VolumeState.RECLAIMING and row.detail == "Terminating, held by pod(s) holder (Pending)"
    claim = core.read_namespaced_persistent_volume_claim(pvc, bench.namespace)
    assert claim.metadata.deletion_timestamp
    assert "kubernetes.io/pvc-protection" in (claim.metadata.finalizers or [])
    core.delete_namespaced_pod("holder", bench.namespace, grace_period_seconds=0)
    wait_until_gone(core, bench.namespace)
    bench.sweep()
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)]


def _holder(core: client.CoreV1Api, namespace: str, name: str, pvc: str, phase: str) -> str:
    """A scheduled pod naming the claim (pvc-protection counts it), with its status set to ``phase``."""
    pod = core.create_namespaced_pod(namespace, {
        "metadata": {"name": name},
        "spec": {"nodeName": "node-1", "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": pvc}}]}})
    if phase != "Pending":
        core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}})
    return str(pod.metadata.uid)


def test_finished_pods_holding_a_reclaimed_claim_are_deleted_running_ones_never(
        bench: Bench, core: client.CoreV1Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    pvc = bench.admit("etl", "done")
    for name, phase in (("ok", "Succeeded"), ("bad", "Failed"), ("live", "Running")):
        _holder(core, bench.namespace, name, pvc, phase)
    set_run(bench.engine, "etl", "done", "success", T0)
    assert bench.sweep(settle=1.0) == 0
    deleted = sorted((e["pod"], e["phase"], e["reason"]) for e in _events(caplog, "finished_pod_deleted"))
    assert deleted == [("bad", "Failed", "run_succeeded"), ("ok", "Succeeded", "run_succeeded")]
    [row] = bench.rows()  # the Running pod still holds the claim: named, never touched
    assert row.state is VolumeState.RECLAIMING and row.detail == "Terminating, held by pod(s) live (Running)"
    assert [p.metadata.name for p in core.list_namespaced_pod(bench.namespace).items] == ["live"]
    core.patch_namespaced_pod_status("live", bench.namespace, {"status": {"phase": "Succeeded"}})
    bench.sweep(settle=5.0)  # the task ended: the next sweep deletes it and finishes the reclaim
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)]
    assert core.list_namespaced_pod(bench.namespace).items == []


def test_finished_pods_stay_when_the_setting_is_off(bench: Bench, core: client.CoreV1Api) -> None:
    pvc = bench.admit("etl", "kept-pods")
    _holder(core, bench.namespace, "ok", pvc, "Succeeded")
    set_run(bench.engine, "etl", "kept-pods", "success", T0)
    assert bench.sweep(settle=1.0, delete_finished_pods=False) == 0
    [row] = bench.rows()
    assert row.state is VolumeState.RECLAIMING and row.detail == "Terminating, held by pod(s) ok (Succeeded)"
    assert [p.metadata.name for p in core.list_namespaced_pod(bench.namespace).items] == ["ok"]


def test_a_failed_runs_finished_pods_stay_until_its_ttl(bench: Bench, core: client.CoreV1Api) -> None:
    pvc = bench.admit("etl", "failed")
    _holder(core, bench.namespace, "crashed", pvc, "Failed")
    set_run(bench.engine, "etl", "failed", "failed", T0)
    assert bench.sweep(settle=1.0) == 0  # within the TTL nothing is reclaimed, so no pod is touched
    assert [p.metadata.name for p in core.list_namespaced_pod(bench.namespace).items] == ["crashed"]
    bench.now = T0 + dt.timedelta(hours=24)
    assert bench.sweep(settle=5.0) == 0
    assert core.list_namespaced_pod(bench.namespace).items == []
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.TTL_EXPIRED)]


def test_a_crafted_pvc_whose_identity_cannot_be_recorded_does_not_stop_the_sweep(
        bench: Bench, core: client.CoreV1Api, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 16.1: our labels plus a 300-character dag_id annotation used to raise a DataError in adoption
    and end every sweep with a traceback, so that nothing was reclaimed anywhere."""
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    crafted = claim_manifest(ClaimSpec(namespace=bench.namespace, name="leoflow-staging-crafted-0000000000",
                                       dag_id="d" * 300, run_id="r", storage_class="nfs", size="1Gi"),
                             instance=bench.kube.instance)
    core.create_namespaced_persistent_volume_claim(bench.namespace, crafted)
    done = bench.admit("etl", "done")
    set_run(bench.engine, "etl", "done", "success", T0)
    bench.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)  # the crafted PVC is old enough to adopt
    assert bench.sweep(adopt_min_age=dt.timedelta(0)) == 0
    assert [(r.pvc_name, r.delete_reason) for r in bench.rows()] == [(done, DeleteReason.RUN_SUCCEEDED)]
    [stray] = [e for e in _events(caplog, "stray_pvc") if e["pvc"] == "leoflow-staging-crafted-0000000000"]
    assert "dag_id annotation is longer than 250 characters" in stray["detail"]
    core.read_namespaced_persistent_volume_claim("leoflow-staging-crafted-0000000000", bench.namespace)  # untouched


def test_a_naive_end_date_means_utc_in_sql_as_in_python(database_url: str, bench: Bench) -> None:
    """Issue 16.4: on a server whose TimeZone is behind UTC, the reclaim's SQL guard read a naive end_date
    in that zone while the plan read it as UTC, and failed runs were kept past their TTL, silently."""
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{sa.make_url(database_url).database}\" SET timezone TO "
                             "'America/New_York'"))
        conn.execute(sa.text("CREATE TABLE naive_runs (dag_id varchar(250), run_id varchar(250), "
                             "state varchar(50), end_date timestamp without time zone)"))
        conn.execute(sa.text("INSERT INTO naive_runs VALUES ('etl', 'naive', 'failed', :e)"),
                     {"e": (T0 - dt.timedelta(hours=24, minutes=30)).replace(tzinfo=None)})  # UTC, as documented
    admin.dispose()
    bench.engine = make_engine(database_url, timeout=10)  # the GC's own engine, as `leoflow-staging gc` makes it
    bench.admit("etl", "naive")
    assert bench.sweep(runs=RunsTable(table="naive_runs")) == 0
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.TTL_EXPIRED)]


def test_a_claim_deleted_by_hand_is_audited_as_pvc_missing_not_as_a_reclaim(
        bench: Bench, core: client.CoreV1Api, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 16.5: the GC deleted nothing, so the row must not say run_succeeded/ttl_expired."""
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    pvc = bench.admit("etl", "by-hand")
    set_run(bench.engine, "etl", "by-hand", "success", T0)
    core.delete_namespaced_persistent_volume_claim(pvc, bench.namespace)
    wait_until_gone(core, bench.namespace)
    assert bench.sweep() == 0
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.PVC_MISSING)]
    [healed] = _events(caplog, "healed")
    assert healed["pvc"] == pvc and healed["reason"] == "pvc_missing"
    assert _events(caplog, "reclaimed") == []


def test_a_failed_run_that_turns_success_during_its_reclaim_is_reclaimed_as_succeeded(
        bench: Bench, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.6: a failed -> success flip between planning and the delete is not "the run came back"."""
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    pvc = bench.admit("etl", "flip")
    set_run(bench.engine, "etl", "flip", "failed", T0 - dt.timedelta(hours=25))
    sweeper = bench.sweeper()
    real_begin = reclaim_batches.begin_reclaims

    def begin_then_flip(*args: Any, **kwargs: Any) -> set[int]:
        started = real_begin(*args, **kwargs)  # the row goes reclaiming (ttl_expired) ...
        set_run(bench.engine, "etl", "flip", "success", T0)  # ... and the run flips before the guarded delete
        return started

    monkeypatch.setattr(reclaim_batches, "begin_reclaims", begin_then_flip)
    assert sweeper.run() == 0
    assert [(r.pvc_name, r.state, r.delete_reason) for r in bench.rows()] == [
        (pvc, VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)]
    assert _events(caplog, "aborted") == []


def test_strays_are_adopted_and_lost_pvcs_healed(bench: Bench, core: client.CoreV1Api) -> None:
    stray = bench.kube.create_claim(ClaimSpec(namespace=bench.namespace, name=pvc_name("x", "y"),
                                              dag_id="x", run_id="y", storage_class="nfs", size="1Gi"))
    set_run(bench.engine, "x", "y", "running")
    lost = bench.admit("etl", "lost")
    set_run(bench.engine, "etl", "lost", "running")
    core.delete_namespaced_persistent_volume_claim(lost, bench.namespace)
    wait_until_gone_named(core, bench.namespace, lost)
    bench.now = dt.datetime.now(dt.UTC) + H  # both older than the adoption grace and the listing
    assert bench.sweep() == 0
    rows = {r.pvc_name: r for r in bench.rows()}
    assert rows[stray.name].state is VolumeState.ACTIVE and rows[stray.name].pvc_uid == stray.uid
    assert (rows[lost].state, rows[lost].delete_reason) == (VolumeState.DELETED, DeleteReason.PVC_MISSING)
    set_run(bench.engine, "x", "y", "success", T0)  # the adopted volume now follows the rules
    bench.sweep()
    assert {r.pvc_name: r.state for r in bench.rows()}[stray.name] is VolumeState.DELETED


def test_two_sweeps_at_once_one_acts(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bench.admit("etl", "ok")
    set_run(bench.engine, "etl", "ok", "success", T0)
    with single_flight(bench.engine) as held:
        assert held
        assert bench.sweep() == 0  # the loser exits 0 ...
        assert bench.rows()[0].state is VolumeState.ACTIVE  # ... having done nothing
    assert _events(caplog, "sweep_skipped")
    bench.sweep()
    assert bench.rows()[0].state is VolumeState.DELETED


def test_a_failed_action_gives_a_non_zero_exit_after_the_rest(bench: Bench) -> None:
    bench.admit("etl", "a")
    bench.admit("etl", "b")
    set_run(bench.engine, "etl", "a", "success", T0)
    set_run(bench.engine, "etl", "b", "success", T0)
    with bench.engine.begin() as conn:  # a row the GC cannot prove the identity of
        conn.execute(sa.text("UPDATE staging_volumes SET pvc_uid = NULL WHERE run_id = 'a'"))
    assert bench.sweep() == 1
    states = {r.run_id: r.state for r in bench.rows()}
    assert states == {"a": VolumeState.ACTIVE, "b": VolumeState.DELETED}  # never stuck in reclaiming


def wait_until_gone_named(core: client.CoreV1Api, namespace: str, name: str) -> None:
    import time

    for _ in range(300):
        if name not in [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(namespace).items]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} still present")


def test_another_installations_pvcs_are_never_adopted_or_deleted(bench: Bench, kubeconfig: Path,
                                                                 core: client.CoreV1Api) -> None:
    other = KubeApi(make_api_client(str(kubeconfig)), timeout=10, instance="other-install")
    theirs = other.create_claim(ClaimSpec(namespace=bench.namespace, name="leoflow-staging-theirs-r-0000000000",
                                          dag_id="theirs", run_id="r", storage_class="nfs", size="1Gi"))
    bench.now = dt.datetime.now(dt.UTC) + H  # old enough to adopt, and its run is in no runs table here
    assert bench.sweep() == 0
    assert bench.rows() == []  # not adopted ...
    assert core.read_namespaced_persistent_volume_claim(theirs.name, bench.namespace).metadata.uid == theirs.uid
