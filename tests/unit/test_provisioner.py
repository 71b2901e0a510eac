"""The provisioner's decisions with fakes of its adapters (the staging_volumes functions, the Kubernetes
adapter, the class source, the claim look-up): warm path, re-creation, refusals, races and the time budget.
The same paths against the real apiserver and PostgreSQL: tests/e2e/test_webhook_admission.py,
tests/e2e/test_gc.py (the provisioner in its Bench) and tests/integration."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from shared.db import volumes_repo
from shared.errors import DatabaseUnavailable, DataRejected, KubeUnavailable, SchemaError, StagingError
from shared.kube import AlreadyExists
from shared.naming import pvc_name
from shared.objects import ClaimInfo, StorageClassInfo
from shared.volumes import DeleteReason, VolumeRecord, VolumeState
from tests.unit.fakes import T0, FakeDb, FakeEngine, FakeKube
from webhook.intent import StagingIntent
from webhook.provisioning import Deadline, Ensured, VolumeProvisioner
from webhook.storage_choice import ClassPolicy
from webhook.verdicts import Denied, Verdict

NS, DAG, RUN = "ns", "etl", "manual__2026-05-23T10:00:00+00:00"
PVC = pvc_name(DAG, RUN)
INTENT = StagingIntent(dag_id=DAG, run_id=RUN, pvc_name=PVC, size="5Gi", requested_class=None)
NFS = StorageClassInfo(name="nfs", provisioner="nfs.csi.k8s.io")
LOCAL = StorageClassInfo(name="local", provisioner="rancher.io/local-path", is_default=True)
DB_T, KUBE_T = 0.5, 1.0


class Classes:
    """The ``ClassSource``: a cached answer, and what a fresh list would say."""

    def __init__(self, cached: list[StorageClassInfo], fresh: list[StorageClassInfo] | None = None) -> None:
        self.cached, self.fresh = cached, fresh if fresh is not None else cached
        self.calls: list[bool] = []

    def __call__(self, *, fresh: bool = False) -> list[StorageClassInfo]:
        self.calls.append(fresh)
        return self.fresh if fresh else self.cached


class Lookups:
    """The warm path's ``read_claim`` (namespace, name, the row's uid): here the fake API behind it."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.calls: list[tuple[str, str, str | None]] = []

    def __call__(self, namespace: str, name: str, uid: str | None) -> ClaimInfo | None:
        self.calls.append((namespace, name, uid))
        return self.kube.read_claim(namespace, name)


class World:
    """One provisioner over fakes sharing one log of side effects."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str] = []
        self.db = FakeDb(log=self.log).install(monkeypatch)
        self.kube = FakeKube(log=self.log)
        self.engine = FakeEngine()
        self.classes = Classes([LOCAL, NFS])
        self.lookups = Lookups(self.kube)

    def provisioner(self, *, db_timeout: float = DB_T, kube_timeout: float = KUBE_T) -> VolumeProvisioner:
        return VolumeProvisioner(engine=self.engine, reader=self.engine, kube=self.kube, classes=self.classes,
                                 read_claim=self.lookups, class_policy=ClassPolicy(configured=None),
                                 db_timeout=db_timeout, kube_timeout=kube_timeout, clock=lambda: T0)

    def ensure(self, deadline: Deadline | None = None, **timeouts: float) -> Ensured:
        return self.provisioner(**timeouts).ensure(NS, INTENT, deadline or Deadline(30))

    def denied(self, deadline: Deadline | None = None, **timeouts: float) -> Verdict:
        with pytest.raises(Denied) as refused:
            self.ensure(deadline, **timeouts)
        verdict = refused.value.verdict
        assert not verdict.allowed and verdict.message.startswith("leoflow-staging: ")
        return verdict

    def row(self, *, uid: str | None, state: VolumeState = VolumeState.ACTIVE, dag_id: str = DAG,
            run_id: str = RUN) -> VolumeRecord:
        return self.db.add_row(namespace=NS, pvc_name=PVC, pvc_uid=uid, dag_id=dag_id, run_id=run_id, state=state)

    def claim(self, *, uid: str, terminating: bool = False, dag_id: str = DAG, run_id: str = RUN,
              managed: bool = True, instance: str | None = None) -> ClaimInfo:
        return self.kube.add_claim(namespace=NS, name=PVC, uid=uid, dag_id=dag_id, run_id=run_id,
                                   terminating=terminating, managed=managed, instance=instance)

    def creates(self) -> list[str]:
        return [e for e in self.log if e.startswith("kube:create_claim")]

    def rows(self) -> list[tuple[str | None, VolumeState, DeleteReason | None]]:
        return [(r.pvc_uid, r.state, r.delete_reason) for r in sorted(self.db.rows.values(), key=lambda r: r.id)]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


# -- the cold and warm paths ---------------------------------------------------------------------------------------

def test_cold_path_creates_the_claim_then_records_it(world: World) -> None:
    ensured = world.ensure()
    claim = world.kube.claims[NS, PVC]
    assert ensured == Ensured(PVC, created=True, storage_class="nfs", pvc_uid=claim.uid,
                              provisioner="nfs.csi.k8s.io",  # its profile: the size is not enforced
                              warnings=("leoflow-staging: class nfs (nfs.csi.k8s.io) ignores the requested size 5Gi",))
    assert (claim.dag_id, claim.run_id, claim.storage_class, claim.size) == (DAG, RUN, "nfs", "5Gi")
    assert world.log == [f"kube:create_claim:{NS}/{PVC}@{claim.uid}", "db:insert_active:1"]  # claim first
    [row] = world.db.rows.values()
    assert (row.pvc_uid, row.state, row.dag_id, row.run_id, row.storage_class, row.size) == (
        claim.uid, VolumeState.ACTIVE, DAG, RUN, "nfs", "5Gi")


def test_warm_path_a_row_and_its_live_claim_need_no_create_and_no_write(world: World) -> None:
    world.row(uid="u1")
    world.claim(uid="u1")
    ensured = world.ensure()
    assert ensured == Ensured(PVC, created=False, storage_class="nfs")
    assert world.log == [] and world.engine.transactions == 0
    assert world.lookups.calls == [(NS, PVC, "u1")]  # the look-up is told the row's uid
    assert world.classes.calls == []  # no class choice on the warm path


def test_a_reclaiming_row_is_a_retriable_409_and_nothing_else_happens(world: World) -> None:
    world.row(uid="u1", state=VolumeState.RECLAIMING)
    world.claim(uid="u1")
    verdict = world.denied()
    assert (verdict.reason, verdict.code, verdict.retriable) == ("reclaiming", 409, True)
    assert PVC in verdict.message and "retry" in verdict.message
    assert world.log == [] and world.lookups.calls == []


def test_a_terminating_claim_is_a_retriable_denial(world: World) -> None:
    world.row(uid="u1")
    world.claim(uid="u1", terminating=True)
    verdict = world.denied()
    assert (verdict.reason, verdict.code, verdict.retriable) == ("pvc_terminating", 409, True)
    assert world.log == [] and world.rows() == [("u1", VolumeState.ACTIVE, None)]


def test_a_recorded_claim_that_is_gone_closes_its_row_and_a_new_claim_is_created(world: World) -> None:
    old = world.row(uid="u-old")
    ensured = world.ensure()
    new = world.kube.claims[NS, PVC]
    assert ensured.created and ensured.pvc_uid == new.uid != "u-old"
    assert world.rows() == [("u-old", VolumeState.DELETED, DeleteReason.PVC_MISSING),
                            (new.uid, VolumeState.ACTIVE, None)]
    assert world.db.rows[old.id].detail == "PVC not found at admission; a new one was created"
    assert world.log == [f"db:close_missing:{old.id}", f"kube:create_claim:{NS}/{PVC}@{new.uid}",
                         "db:insert_active:2"]


def test_a_recorded_claim_replaced_under_the_same_name_closes_the_row_and_records_the_new_uid(world: World) -> None:
    world.row(uid="u-old")
    world.claim(uid="u-new")  # ours, same run, another lifetime (e.g. re-created by hand)
    ensured = world.ensure()
    assert ensured == Ensured(PVC, created=False, storage_class="nfs", pvc_uid="u-new")
    assert world.rows() == [("u-old", VolumeState.DELETED, DeleteReason.PVC_MISSING),
                            ("u-new", VolumeState.ACTIVE, None)]
    assert world.creates() == []


def test_an_existing_claim_of_ours_without_a_row_is_read_back_and_recorded(world: World) -> None:
    world.claim(uid="u-race")  # another replica created it a moment ago: 409 AlreadyExists here
    ensured = world.ensure()
    assert ensured == Ensured(PVC, created=False, storage_class="nfs", pvc_uid="u-race")
    assert world.rows() == [("u-race", VolumeState.ACTIVE, None)] and world.creates() == []


def test_already_exists_then_gone_on_read_back_is_a_retriable_race(world: World) -> None:
    world.kube.fail["create_claim"] = AlreadyExists("exists")  # deleted again before the read
    verdict = world.denied()
    assert (verdict.reason, verdict.code, verdict.retriable) == ("pvc_race", 409, True)
    assert world.db.rows == {}


@pytest.mark.parametrize("claim", [
    {"dag_id": DAG, "run_id": "another-run"},
    {"dag_id": "another-dag", "run_id": RUN},
    {"instance": "another-installation"},
    {"managed": False},
], ids=["other-run", "other-dag", "other-instance", "not-managed"])
def test_a_claim_that_is_not_this_runs_is_never_adopted(world: World, claim: dict[str, object]) -> None:
    world.claim(uid="theirs", **claim)
    verdict = world.denied()
    assert (verdict.reason, verdict.code, verdict.retriable) == ("pvc_not_ours", 403, False)
    assert repr(PVC) in verdict.message and repr(NS) in verdict.message
    assert world.db.rows == {} and world.kube.claims[NS, PVC].uid == "theirs"


def test_a_row_recorded_for_another_run_under_the_same_name_is_denied_before_any_call(world: World) -> None:
    world.row(uid="u1", dag_id=DAG, run_id="another-run")
    world.claim(uid="u1", run_id="another-run")
    verdict = world.denied()
    assert (verdict.reason, verdict.code) == ("pvc_not_ours", 403)
    assert "'another-run'" in verdict.message and repr(RUN) in verdict.message
    assert world.log == [] and world.lookups.calls == [] and world.classes.calls == []


# -- the StorageClass ----------------------------------------------------------------------------------------------

def test_no_rwx_class_is_denied_after_one_fresh_re_list(world: World) -> None:
    world.classes = Classes([LOCAL])
    verdict = world.denied()
    assert (verdict.reason, verdict.code) == ("no_rwx_class", 403)
    assert "local (rancher.io/local-path, default)" in verdict.message
    assert world.classes.calls == [False, True] and world.log == []


def test_a_class_added_since_the_cached_list_is_found_by_the_fresh_re_list(world: World) -> None:
    world.classes = Classes([LOCAL], fresh=[LOCAL, NFS])
    assert world.ensure().storage_class == "nfs"
    assert world.classes.calls == [False, True]


def test_a_requested_class_is_used_as_asked(world: World) -> None:
    world.classes = Classes([LOCAL, NFS, StorageClassInfo(name="fast-nfs", provisioner="nfs.csi.k8s.io")])
    intent = StagingIntent(dag_id=DAG, run_id=RUN, pvc_name=PVC, size="1Gi", requested_class="fast-nfs")
    ensured = world.provisioner().ensure(NS, intent, Deadline(30))
    assert ensured.storage_class == "fast-nfs" == world.kube.claims[NS, PVC].storage_class
    assert world.classes.calls == [False]


# -- the time budget -----------------------------------------------------------------------------------------------

def test_no_time_for_the_first_read_means_no_call_at_all(world: World) -> None:
    world.db.fail["read_live_volume"] = AssertionError("read despite no time")
    verdict = world.denied(Deadline(DB_T + KUBE_T - 0.1))
    assert (verdict.reason, verdict.code, verdict.retriable) == ("timeout", 504, True)
    assert "before reading staging_volumes" in verdict.message


def test_a_create_whose_worst_case_does_not_fit_is_never_started(world: World) -> None:
    verdict = world.denied(Deadline(2 * KUBE_T - 0.2))  # the read (db + kube) and the listing fit; 2 x kube not
    assert (verdict.reason, verdict.code, verdict.retriable) == ("timeout", 504, True)
    assert "before creating the PVC" in verdict.message
    assert world.log == [] and world.db.rows == {}


def test_a_slow_create_leaves_no_time_to_record(world: World) -> None:
    deadline = Deadline(30)
    world.kube.hooks["create_claim"] = lambda: setattr(deadline, "started", time.monotonic() - 30)  # took 30 s
    verdict = world.denied(deadline)
    assert (verdict.reason, verdict.code) == ("timeout", 504)
    assert "before recording the volume" in verdict.message
    assert world.creates() != [] and world.db.rows == {}  # the GC adopts the unrecorded claim later


# -- recording -------------------------------------------------------------------------------------------------------

def test_a_row_of_an_earlier_lifetime_found_while_recording_is_closed_and_the_new_one_recorded(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.row(uid="u-old")  # the warm read missed it (it raced with this admission)
    monkeypatch.setattr(volumes_repo, "read_live_volume", lambda engine, namespace, name: None)
    ensured = world.ensure()
    assert world.rows() == [("u-old", VolumeState.DELETED, DeleteReason.PVC_MISSING),
                            (ensured.pvc_uid, VolumeState.ACTIVE, None)]
    assert world.db.rows[1].detail == f"PVC re-created with uid {ensured.pvc_uid}"


def test_a_row_that_turned_reclaiming_while_recording_is_a_retriable_denial(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.row(uid="u-old", state=VolumeState.RECLAIMING)
    monkeypatch.setattr(volumes_repo, "read_live_volume", lambda engine, namespace, name: None)
    verdict = world.denied()
    assert (verdict.reason, verdict.code, verdict.retriable) == ("reclaiming", 409, True)
    assert world.rows() == [("u-old", VolumeState.RECLAIMING, None)]


@pytest.mark.parametrize(("driver_error", "expected"), [
    (sa.exc.OperationalError("SELECT", {}, Exception("connection refused")), DatabaseUnavailable),
    (sa.exc.ProgrammingError("SELECT", {}, Exception('relation "staging_volumes" does not exist')), SchemaError),
], ids=["unreachable", "not-migrated"])
def test_driver_errors_of_the_warm_read_become_product_errors(world: World, driver_error: Exception,
                                                              expected: type[StagingError]) -> None:
    world.db.fail["read_live_volume"] = driver_error
    with pytest.raises(expected):
        world.ensure()
    assert world.log == []


def test_a_refused_record_is_data_rejected(world: World) -> None:
    world.db.fail["insert_active"] = sa.exc.DataError("INSERT", {}, Exception("value too long"))
    with pytest.raises(DataRejected, match="value too long"):
        world.ensure()
    assert world.db.rows == {}


def test_kube_errors_propagate_for_the_handler_to_map(world: World) -> None:
    world.row(uid="u1")
    world.kube.fail["read_claim"] = KubeUnavailable("apiserver down")
    with pytest.raises(KubeUnavailable, match="apiserver down"):
        world.ensure()
    assert world.log == []
