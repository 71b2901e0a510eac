"""Small in-memory fakes of the adapters' interfaces, for the fast tests of the admission handler, the
provisioner and the GC executor.

They stand beside the real tests (tests/integration against PostgreSQL, tests/e2e against the real apiserver),
never instead of them: the SQL guards, the row locks and the apiserver's preconditions are proven there. Here
each fake does what its real counterpart promises, in a few explicit lines:

* ``FakeDb``: ``staging_volumes`` rows and the orchestrator's runs, behind the same functions of
  ``shared.db.volumes_repo``, ``shared.db.reclaim_batches`` and ``shared.db.runs_repo`` that the product calls
  (``install`` monkeypatches them). Writes apply at once (no transaction rollback is modelled). A guarded
  transition evaluates its guard (``reclaimable_condition``) against the fake runs at the moment it runs.
* ``FakeEngine``: ``begin()`` / ``connect()`` as context managers yielding an opaque connection.
* ``FakeKube``: the ``shared.kube.KubeApi`` calls on PVCs and pods, with the apiserver's uid preconditions and
  the pvc-protection finalizer (a deleted claim still used by a pod stays Terminating until the pod is gone).

Side effects (writes, creates, deletes) are appended to one ``log`` shared by the fakes, so a test can assert
their order. ``fail`` maps an operation (or ``(operation, name)``) to the exception it raises; ``hooks`` maps
an operation to a callable run once, right after its next call (a concurrent change at that instant).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from shared import labels
from shared.db import reclaim_batches, runs_repo, volumes_repo
from shared.kube import AlreadyExists
from shared.kube.api import UidMismatch
from shared.objects import ClaimInfo, ClaimSpec, PodUse
from shared.settings import RunsTable
from shared.volumes import DeleteReason, NewVolume, RunId, RunState, VolumeRecord, VolumeState

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


class FakeConn:
    """An opaque connection: the repository functions that take it are faked."""

    def rollback(self) -> None:
        pass

    def commit(self) -> None:
        pass


class FakeEngine:
    """``begin()`` and ``connect()``, counted."""

    def __init__(self) -> None:
        self.transactions = 0

    @contextlib.contextmanager
    def begin(self) -> Iterator[FakeConn]:
        self.transactions += 1
        yield FakeConn()

    @contextlib.contextmanager
    def connect(self) -> Iterator[FakeConn]:
        yield FakeConn()


@dataclass(frozen=True)
class Guard:
    """What ``runs_repo.reclaimable_condition`` stands for: evaluated per row by the fake transitions."""

    config: RunsTable
    reason: DeleteReason
    now: dt.datetime
    failed_ttl: dt.timedelta


def _raise_if(fail: dict[Any, Exception], *keys: Any) -> None:
    for key in keys:
        if key in fail:
            raise fail[key]


@dataclass
class FakeDb:
    rows: dict[int, VolumeRecord] = field(default_factory=dict)
    runs: dict[RunId, RunState] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    fail: dict[Any, Exception] = field(default_factory=dict)
    hooks: dict[str, Callable[[], object]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- test set-up and reading back --------------------------------------------------------------------------
    def add_row(self, *, namespace: str = "ns", pvc_name: str, pvc_uid: str | None, dag_id: str, run_id: str,
                state: VolumeState = VolumeState.ACTIVE, reason: DeleteReason | None = None,
                created_at: dt.datetime = T0 - dt.timedelta(days=2), storage_class: str = "nfs",
                size: str = "1Gi") -> VolumeRecord:
        row = VolumeRecord(id=next(self._ids), namespace=namespace, pvc_name=pvc_name, pvc_uid=pvc_uid,
                           dag_id=dag_id, run_id=run_id, storage_class=storage_class, size=size, state=state,
                           created_at=created_at, delete_reason=reason)
        self.rows[row.id] = row
        return row

    def live(self, namespace: str, pvc_name: str) -> VolumeRecord | None:
        return next((r for r in self.rows.values() if (r.namespace, r.pvc_name) == (namespace, pvc_name)
                     and r.state is not VolumeState.DELETED), None)

    def writes(self) -> list[str]:
        return [e for e in self.log if e.startswith("db:")]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeDb:
        """Route the repository functions the product calls to this fake."""
        for module, names in ((volumes_repo, ("read_live_volume", "live_volume", "insert_active", "close_missing",
                                              "begin_reclaim", "abort_reclaim", "finish_reclaim", "set_reason",
                                              "iter_live", "live_names", "last_deleted")),
                              (reclaim_batches, ("begin_reclaims", "abort_reclaims", "set_reasons",
                                                 "finish_reclaims", "close_missing_reclaiming", "set_details")),
                              (runs_repo, ("reclaimable_condition", "read_run_locked", "read_runs_locked",
                                           "run_states", "check_readable", "can_lock_runs"))):
            for name in names:
                monkeypatch.setattr(module, name, getattr(self, name))
        return self

    # -- internals --------------------------------------------------------------------------------------------
    def _op(self, op: str) -> None:
        _raise_if(self.fail, op)

    def _done(self, op: str, entry: str | None = None) -> None:
        if entry is not None:
            self.log.append(entry)
        hook = self.hooks.pop(op, None)
        if hook is not None:
            hook()

    def _move(self, op: str, row_id: int, expect: VolumeState, **changes: Any) -> bool:
        row = self.rows.get(row_id)
        if row is None or row.state is not expect:
            return False
        self.rows[row_id] = replace(row, **changes)
        self.log.append(f"db:{op}:{row_id}")
        return True

    def _allows(self, row: VolumeRecord, guard: Guard) -> bool:
        run = self.runs.get(row.run)
        if row.held(guard.now):  # volumes_repo.not_held, beside every guard
            return False
        if guard.reason is DeleteReason.OPERATOR_REQUEST:
            return run is None or run.state in (*guard.config.success_states, *guard.config.failed_states)
        if guard.reason is DeleteReason.ORPHANED:
            return run is None
        if guard.reason is DeleteReason.RUN_SUCCEEDED:
            return run is not None and run.state in guard.config.success_states
        return (run is not None and run.state in guard.config.failed_states and run.end_date is not None
                and run.end_date <= guard.now - guard.failed_ttl)

    # -- shared.db.volumes_repo ----------------------------------------------------------------------------------
    def read_live_volume(self, engine: object, namespace: str, pvc_name: str) -> VolumeRecord | None:
        self._op("read_live_volume")
        return self.live(namespace, pvc_name)

    def live_volume(self, conn: object, namespace: str, pvc_name: str, *, lock: bool) -> VolumeRecord | None:
        self._op("live_volume")
        return self.live(namespace, pvc_name)

    def insert_active(self, conn: object, volume: NewVolume, *, now: dt.datetime) -> None:
        self._op("insert_active")
        if self.live(volume.namespace, volume.pvc_name) is None:  # ON CONFLICT DO NOTHING
            row = self.add_row(namespace=volume.namespace, pvc_name=volume.pvc_name, pvc_uid=volume.pvc_uid,
                               dag_id=volume.dag_id, run_id=volume.run_id, created_at=now,
                               storage_class=volume.storage_class, size=volume.size)
            self._done("insert_active", f"db:insert_active:{row.id}")

    def close_missing(self, conn: object, row_id: int, *, now: dt.datetime, detail: str) -> bool:
        self._op("close_missing")
        return self._move("close_missing", row_id, VolumeState.ACTIVE, state=VolumeState.DELETED, deleted_at=now,
                          delete_reason=DeleteReason.PVC_MISSING, detail=detail)

    def last_deleted(self, conn: object, namespace: str, pvc_name: str, *, dag_id: str,
                     run_id: str) -> VolumeRecord | None:
        self._op("last_deleted")
        return max((r for r in self.rows.values() if (r.namespace, r.pvc_name, r.dag_id, r.run_id) ==
                    (namespace, pvc_name, dag_id, run_id) and r.state is VolumeState.DELETED),
                   key=lambda r: r.id, default=None)

    def begin_reclaim(self, conn: object, row_id: int, *, reason: DeleteReason, now: dt.datetime,
                      still_reclaimable: Guard) -> bool:
        self._op("begin_reclaim")
        row = self.rows.get(row_id)
        moved = row is not None and self._allows(row, still_reclaimable) and self._move(
            "begin_reclaim", row_id, VolumeState.ACTIVE, state=VolumeState.RECLAIMING, reclaim_started_at=now,
            delete_reason=reason, detail=None)
        self._done("begin_reclaim")
        return moved

    def abort_reclaim(self, conn: object, row_id: int, *, detail: str) -> bool:
        self._op("abort_reclaim")
        return self._move("abort_reclaim", row_id, VolumeState.RECLAIMING, state=VolumeState.ACTIVE,
                          reclaim_started_at=None, delete_reason=None, detail=detail)

    def finish_reclaim(self, conn: object, row_id: int, *, now: dt.datetime) -> bool:
        self._op("finish_reclaim")
        return self._move("finish_reclaim", row_id, VolumeState.RECLAIMING, state=VolumeState.DELETED,
                          deleted_at=now, detail=None)

    def set_reason(self, conn: object, row_id: int, reason: DeleteReason) -> None:
        self._op("set_reason")
        self._move("set_reason", row_id, VolumeState.RECLAIMING, delete_reason=reason)

    def iter_live(self, conn: object, *, batch_size: int) -> Iterator[list[VolumeRecord]]:
        live = sorted((r for r in self.rows.values() if r.state is not VolumeState.DELETED), key=lambda r: r.id)
        for first in range(0, len(live), batch_size):
            yield live[first:first + batch_size]

    def live_names(self, conn: object, keys: Sequence[tuple[str, str]], *, chunk: int = 500) -> set[tuple[str, str]]:
        return {k for k in keys if self.live(*k) is not None}

    # -- shared.db.reclaim_batches -------------------------------------------------------------------------------
    def begin_reclaims(self, conn: object, ids: Collection[int], *, reason: DeleteReason, now: dt.datetime,
                       still_reclaimable: Guard) -> set[int]:
        self._op("begin_reclaims")
        moved = {i for i in sorted(ids) if i in self.rows and self._allows(self.rows[i], still_reclaimable)
                 and self._move("begin_reclaims", i, VolumeState.ACTIVE, state=VolumeState.RECLAIMING,
                                reclaim_started_at=now, delete_reason=reason, detail=None)}
        self._done("begin_reclaims")
        return moved

    def abort_reclaims(self, conn: object, ids: Collection[int], *, detail: str) -> set[int]:
        self._op("abort_reclaims")
        return {i for i in sorted(ids) if self._move("abort_reclaims", i, VolumeState.RECLAIMING,
                                                      state=VolumeState.ACTIVE, reclaim_started_at=None,
                                                      delete_reason=None, detail=detail)}

    def set_reasons(self, conn: object, ids: Collection[int], reason: DeleteReason) -> set[int]:
        self._op("set_reasons")
        return {i for i in sorted(ids) if self._move("set_reasons", i, VolumeState.RECLAIMING, delete_reason=reason)}

    def finish_reclaims(self, conn: object, ids: Collection[int], *, now: dt.datetime) -> set[int]:
        self._op("finish_reclaims")
        return {i for i in sorted(ids) if self._move("finish_reclaims", i, VolumeState.RECLAIMING,
                                                      state=VolumeState.DELETED, deleted_at=now, detail=None)}

    def close_missing_reclaiming(self, conn: object, ids: Collection[int], *, now: dt.datetime,
                                 detail: str) -> set[int]:
        self._op("close_missing_reclaiming")
        return {i for i in sorted(ids) if self._move("close_missing_reclaiming", i, VolumeState.RECLAIMING,
                                                      state=VolumeState.DELETED, deleted_at=now,
                                                      delete_reason=DeleteReason.PVC_MISSING, detail=detail)}

    def set_details(self, conn: object, ids: Collection[int], detail: str | None) -> None:
        self._op("set_details")
        for i in sorted(ids):
            self.rows[i] = replace(self.rows[i], detail=detail)

    # -- shared.db.runs_repo ---------------------------------------------------------------------------------------
    def reclaimable_condition(self, config: RunsTable, reason: DeleteReason, *, now: dt.datetime,
                              failed_ttl: dt.timedelta) -> Guard:
        return Guard(config, reason, now, failed_ttl)

    def read_run_locked(self, conn: object, config: RunsTable, run: RunId, *, lock: bool = True) -> RunState | None:
        self._op("read_run_locked")
        return self.runs.get(run)

    def read_runs_locked(self, conn: object, config: RunsTable, runs: Iterable[RunId], *,
                         lock: bool = True) -> dict[RunId, RunState]:
        self._op("read_runs_locked")
        return {r: self.runs[r] for r in set(runs) if r in self.runs}

    def run_states(self, conn: object, config: RunsTable, runs: Iterable[RunId]) -> dict[RunId, RunState]:
        return {r: self.runs[r] for r in set(runs) if r in self.runs}

    def check_readable(self, conn: object, config: RunsTable) -> None:
        pass

    def can_lock_runs(self, conn: object, config: RunsTable) -> bool:
        return True


@dataclass
class FakeKube:
    """The ``KubeApi`` calls on PVCs and pods, with uid preconditions and the pvc-protection finalizer."""

    instance: str = labels.DEFAULT_INSTANCE
    namespaces: tuple[str, ...] = ()  # the configured list (empty: every labelled namespace)
    labelled: tuple[str, ...] = ("ns",)  # the namespaces labelled for this instance
    claims: dict[tuple[str, str], ClaimInfo] = field(default_factory=dict)
    pods: dict[tuple[str, str], tuple[PodUse, str]] = field(default_factory=dict)  # -> (pod, claim name)
    log: list[str] = field(default_factory=list)
    fail: dict[Any, Exception] = field(default_factory=dict)
    hooks: dict[str, Callable[[], object]] = field(default_factory=dict)
    _uids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_claim(self, *, namespace: str = "ns", name: str, dag_id: str | None, run_id: str | None,
                  uid: str | None = None, managed: bool = True, instance: str | None = None,
                  terminating: bool = False, storage_class: str = "nfs") -> ClaimInfo:
        claim = ClaimInfo(namespace=namespace, name=name, uid=uid or f"uid-{next(self._uids)}", dag_id=dag_id,
                          run_id=run_id, managed=managed, terminating=terminating, created_at=T0 - dt.timedelta(days=2),
                          storage_class=storage_class, size="1Gi", instance=instance or self.instance)
        self.claims[namespace, name] = claim
        return claim

    def add_pod(self, *, namespace: str = "ns", name: str, claim: str, phase: str, inspect: bool = False) -> PodUse:
        pod = PodUse(name=name, uid=f"pod-uid-{next(self._uids)}", phase=phase, inspect=inspect)
        self.pods[namespace, name] = (pod, claim)
        return pod

    def deletes(self) -> list[str]:
        return [e for e in self.log if e.startswith("kube:delete")]

    def _holders(self, namespace: str, claim: str) -> list[PodUse]:
        return sorted((p for (ns, _), (p, c) in self.pods.items() if ns == namespace and c == claim),
                      key=lambda p: p.name)

    def _done(self, op: str, entry: str) -> None:
        self.log.append(entry)
        hook = self.hooks.pop(op, None)
        if hook is not None:
            hook()

    def create_claim(self, spec: ClaimSpec) -> ClaimInfo:
        _raise_if(self.fail, "create_claim", ("create_claim", spec.name))
        if (spec.namespace, spec.name) in self.claims:
            raise AlreadyExists(f"persistentvolumeclaims {spec.name!r} already exists")
        claim = self.add_claim(namespace=spec.namespace, name=spec.name, dag_id=spec.dag_id, run_id=spec.run_id,
                               storage_class=spec.storage_class)
        claim = replace(claim, created_at=T0, size=spec.size)
        self.claims[spec.namespace, spec.name] = claim
        self._done("create_claim", f"kube:create_claim:{spec.namespace}/{spec.name}@{claim.uid}")
        return claim

    def read_claim(self, namespace: str, name: str) -> ClaimInfo | None:
        _raise_if(self.fail, "read_claim", ("read_claim", name))
        claim = self.claims.get((namespace, name))
        hook = self.hooks.pop("read_claim", None)  # a change right after the read: the reader holds a stale answer
        if hook is not None:
            hook()
        return claim

    def delete_claim(self, namespace: str, name: str, *, uid: str) -> bool:
        _raise_if(self.fail, "delete_claim", ("delete_claim", name))
        claim = self.claims.get((namespace, name))
        if claim is None:
            return False
        if claim.uid != uid:
            raise UidMismatch(f"PVC {namespace}/{name} is no longer uid {uid}")
        if self._holders(namespace, name):
            self.claims[namespace, name] = replace(claim, terminating=True)
        else:
            del self.claims[namespace, name]
        self._done("delete_claim", f"kube:delete_claim:{namespace}/{name}@{uid}")
        return True

    def labelled_namespaces(self) -> list[str]:
        return list(self.labelled)

    def list_managed_claims(self, *, page_size: int = 500) -> Iterator[list[ClaimInfo]]:
        _raise_if(self.fail, "list_managed_claims")
        yield [c for c in self.claims.values() if c.managed and c.instance == self.instance]

    def list_managed(self, project: Callable[[dict[str, Any]], Any], *, page_size: int = 500,
                     on_version: Callable[[str], None] | None = None) -> Iterator[list[Any]]:
        yield [project({"metadata": {"namespace": c.namespace, "name": c.name, "uid": c.uid}})
               for c in self.claims.values() if c.managed and c.instance == self.instance]

    def pods_using_claims(self, namespace: str, names: Iterable[str]) -> dict[str, list[PodUse]]:
        _raise_if(self.fail, "pods_using_claims", ("pods_using_claims", namespace))
        return {n: held for n in set(names) if (held := self._holders(namespace, n))}

    def delete_pod(self, namespace: str, name: str, *, uid: str) -> bool:
        _raise_if(self.fail, "delete_pod", ("delete_pod", name))
        entry = self.pods.get((namespace, name))
        if entry is None or entry[0].uid != uid:
            return False
        del self.pods[namespace, name]
        claim = self.claims.get((namespace, entry[1]))
        if claim is not None and claim.terminating and not self._holders(namespace, claim.name):
            del self.claims[namespace, claim.name]  # the pvc-protection finalizer is removed
        self._done("delete_pod", f"kube:delete_pod:{namespace}/{name}@{uid}")
        return True
