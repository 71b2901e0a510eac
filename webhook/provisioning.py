"""Ensuring the run's PVC exists and is recorded: the webhook's only side effects.

Idempotent under concurrency: PVC create answers 409 to all but one caller, which then
read it; the row insert is ``ON CONFLICT DO NOTHING`` on the live-row unique index. The
row is read ``FOR SHARE``, so a GC transition to ``reclaiming`` is either visible here or
waits until this admission has finished.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.db import volumes_repo
from shared.db.engine import translate_errors
from shared.errors import DatabaseUnavailable
from shared.kube import AlreadyExists, KubeApi
from shared.objects import ClaimInfo, ClaimSpec, StorageClassInfo
from shared.volumes import NewVolume, VolumeRecord, VolumeState
from webhook.coalescing import CoalescedRead, CoalescingTimeout
from webhook.intent import StagingIntent
from webhook.storage_choice import ClassPolicy, choose_storage_class
from webhook.verdicts import Denied, Verdict, deny
from webhook.volume_choice import choose_row

if TYPE_CHECKING:
    import sqlalchemy as sa

Clock = Callable[[], dt.datetime]
ClaimLookup = Callable[[str, str, "str | None"], "ClaimInfo | None"]  # (namespace, name, expected uid)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StorageClassCache:
    """StorageClasses listed at most once per ``ttl`` seconds per process (thread-safe)."""

    def __init__(self, kube: KubeApi, *, ttl: float) -> None:
        self._kube, self._ttl = kube, ttl
        self._lock = threading.Lock()
        self._classes: list[StorageClassInfo] = []
        self._fetched = -float("inf")

    def get(self, *, fresh: bool = False) -> list[StorageClassInfo]:
        with self._lock:
            if fresh or time.monotonic() - self._fetched > self._ttl:
                self._classes = self._kube.list_storage_classes()
                self._fetched = time.monotonic()
            return self._classes


class ClaimCache:
    """PVCs this process saw alive, by (namespace, name, uid), for ``ttl`` seconds.

    Only the Kubernetes read of the warm path is skipped: the database row is read on every
    admission, so a GC reclaim (which marks the row before deleting) is never missed, and a
    re-created PVC has a new uid. A PVC deleted by hand is noticed within ``ttl`` seconds.
    """

    def __init__(self, *, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl, self._max = ttl, max_entries
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def fresh(self, namespace: str, name: str, uid: str | None) -> bool:
        if self._ttl <= 0 or uid is None:
            return False
        with self._lock:
            seen = self._seen.get((namespace, name, uid))
        return seen is not None and time.monotonic() - seen < self._ttl

    def remember(self, namespace: str, name: str, uid: str) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen.clear()
            self._seen[(namespace, name, uid)] = time.monotonic()


@dataclass
class Deadline:
    """The time budget of one admission; a step starts only if its worst case still fits."""

    budget: float
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def remaining(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def check(self, step: str, worst_case: float) -> None:
        if worst_case > self.remaining():
            raise Denied(deny("timeout", f"leoflow-staging: ran out of time before {step} (budget "
                              f"{self.budget:.1f}s); the database or the Kubernetes API is slow. Retry.",
                              code=504, retriable=True))


@dataclass(frozen=True)
class Ensured:
    """The outcome of ensuring a run's volume."""

    pvc_name: str
    created: bool  # this call created the PVC
    storage_class: str
    pvc_uid: str = ""


def _reclaiming(name: str) -> Verdict:
    return deny("reclaiming", f"leoflow-staging: the run's staging PVC {name!r} is being reclaimed by the "
                "GC (its run had finished); retry in a few seconds",
                code=409, retriable=True)


def _terminating(name: str) -> Verdict:
    return deny("pvc_terminating", f"leoflow-staging: the run's staging PVC {name!r} is being deleted "
                "(Terminating, possibly held by a pod that still uses it); retry once it is gone",
                code=409, retriable=True)


def _not_ours(claim: ClaimInfo) -> Verdict:
    return deny("pvc_not_ours", f"leoflow-staging: a PVC named {claim.name!r} already exists in namespace "
                f"{claim.namespace!r} but does not belong to this run (managed-by, instance or identity "
                "annotations differ); refusing to adopt it. Remove or rename that PVC.")


class VolumeProvisioner:
    """Ensures a run's PVC and its ``staging_volumes`` row."""

    def __init__(self, *, engine: sa.Engine, kube: KubeApi, classes: StorageClassCache,
                 class_policy: ClassPolicy, db_timeout: float, kube_timeout: float,
                 clock: Clock = _utcnow, claims: ClaimCache | None = None,
                 reader: sa.Engine | None = None, read_claim: ClaimLookup | None = None) -> None:
        self._engine, self._kube, self._classes = engine, kube, classes
        # The warm path's PVC read (namespace, name, the row's uid): a watch-fed cache when injected.
        self._read_claim: ClaimLookup = read_claim or (lambda ns, name, _uid: kube.read_claim(ns, name))
        self._reader = reader or engine  # an autocommit engine for the warm path's single read
        # Pods of one run admitted at the same moment share that read (never one that began before them).
        self._live_rows: CoalescedRead[tuple[str, str, str], list[VolumeRecord]] = CoalescedRead(
            self._read_live_rows, fetch_timeout=db_timeout + 0.5)
        self._claims = claims or ClaimCache(ttl=0)
        self._policy = class_policy
        self._db_t, self._kube_t = db_timeout, kube_timeout
        self._clock = clock

    def choose_class(self, intent: StagingIntent, deadline: Deadline) -> str:
        deadline.check("listing StorageClasses", self._kube_t)
        classes = self._classes.get()
        chosen = choose_storage_class(classes, requested=intent.requested_class, policy=self._policy)
        if isinstance(chosen, Verdict) and chosen.reason in ("no_rwx_class", "storage_class_not_found"):
            deadline.check("listing StorageClasses", self._kube_t)  # a class may just have been added
            chosen = choose_storage_class(self._classes.get(fresh=True), requested=intent.requested_class,
                                          policy=self._policy)
        if isinstance(chosen, Verdict):
            raise Denied(chosen)
        return chosen

    def ensure(self, namespace: str, intent: StagingIntent, deadline: Deadline) -> Ensured:
        """Make sure the run's PVC exists and is recorded; raise ``Denied`` when it cannot be.

        The run keeps the claim it has: a live row of the run under its legacy name (made before the
        longer hash) is used as is, and so is a legacy-named claim of the run that no row records yet.
        Only a run with neither gets a claim under the current name. ``Ensured.pvc_name`` is the name
        to patch into the pod.
        """
        current, legacy = intent.pvc_names
        deadline.check("reading staging_volumes", self._db_t + self._kube_t)
        # A read of the same run in flight is waited for at most as long as the budget leaves after this
        # admission's own read and the PVC check (and never longer than one read takes).
        wait = min(deadline.remaining() - self._db_t - self._kube_t, self._db_t + 0.5)
        try:
            with translate_errors("reading staging_volumes"):
                rows = self._live_rows.read((namespace, current, legacy), wait=max(wait, 0.0))
        except CoalescingTimeout as exc:
            raise DatabaseUnavailable(f"reading staging_volumes: {exc}") from exc
        row = choose_row(rows, dag_id=intent.dag_id, run_id=intent.run_id, current_name=current)
        if isinstance(row, Verdict):  # a name collision: never share
            raise Denied(row)
        adopt_legacy = True
        if row is not None:
            name = row.pvc_name
            if row.state is VolumeState.RECLAIMING:
                raise Denied(_reclaiming(name))
            if self._claims.fresh(namespace, name, row.pvc_uid):
                return Ensured(name, created=False, storage_class=row.storage_class)
            claim = self._read_claim(namespace, name, row.pvc_uid)
            if claim is not None and claim.terminating:
                raise Denied(_terminating(name))
            if claim is not None and claim.uid == row.pvc_uid:
                self._claims.remember(namespace, claim.name, claim.uid)
                return Ensured(name, created=False, storage_class=row.storage_class)
            # The recorded PVC is gone (deleted outside our control): close that lifetime.
            with translate_errors("closing a stale staging_volumes row"), self._engine.begin() as conn:
                volumes_repo.close_missing(conn, row.id, now=self._clock(),
                                           detail="PVC not found at admission; a new one was created")
            adopt_legacy = not (name == legacy and claim is None)  # that legacy claim was just found gone
        if adopt_legacy and current != legacy:
            found = self._adoptable_legacy_claim(namespace, intent, legacy, deadline)
            if found is not None:
                return found
        storage_class = self.choose_class(intent, deadline)
        spec = ClaimSpec(namespace=namespace, name=current, dag_id=intent.dag_id,
                         run_id=intent.run_id, storage_class=storage_class, size=intent.size)
        deadline.check("creating the PVC", 2 * self._kube_t)
        created = True
        try:
            claim = self._kube.create_claim(spec)
        except AlreadyExists:
            created = False
            found_claim = self._kube.read_claim(namespace, current)
            if found_claim is None:
                raise Denied(deny("pvc_race", f"leoflow-staging: PVC {current!r} was deleted while "
                                  "being attached; retry", code=409, retriable=True)) from None
            claim = found_claim
        if not claim.belongs_to(intent.dag_id, intent.run_id, self._kube.instance):
            raise Denied(_not_ours(claim))
        if claim.terminating:
            raise Denied(_terminating(current))
        deadline.check("recording the volume", self._db_t)
        self._record(claim, spec)
        self._claims.remember(namespace, claim.name, claim.uid)
        return Ensured(current, created=created, storage_class=claim.storage_class or storage_class,
                       pvc_uid=claim.uid)

    def _read_live_rows(self, key: tuple[str, str, str]) -> list[VolumeRecord]:
        namespace, *names = key
        return volumes_repo.read_live_volumes_named(self._reader, namespace, names)

    def _adoptable_legacy_claim(self, namespace: str, intent: StagingIntent, legacy: str,
                                deadline: Deadline) -> Ensured | None:
        """A claim of this run under its legacy name that no live row records (made by an earlier version
        that stopped before recording it, or by one still running during an upgrade): record and use it."""
        deadline.check("reading the legacy-named PVC", self._kube_t + self._db_t)
        claim = self._kube.read_claim(namespace, legacy)
        if claim is None or claim.terminating or not claim.belongs_to(intent.dag_id, intent.run_id,
                                                                      self._kube.instance):
            return None  # absent, going, or not this run's: the run gets a claim under the current name
        storage_class = claim.storage_class or self.choose_class(intent, deadline)
        spec = ClaimSpec(namespace=namespace, name=legacy, dag_id=intent.dag_id, run_id=intent.run_id,
                         storage_class=storage_class, size=claim.size or intent.size)
        self._record(claim, spec)
        self._claims.remember(namespace, claim.name, claim.uid)
        return Ensured(legacy, created=False, storage_class=storage_class, pvc_uid=claim.uid)

    def _record(self, claim: ClaimInfo, spec: ClaimSpec) -> None:
        volume = NewVolume(namespace=claim.namespace, pvc_name=claim.name, pvc_uid=claim.uid,
                           dag_id=spec.dag_id, run_id=spec.run_id,
                           storage_class=claim.storage_class or spec.storage_class,
                           size=claim.size or spec.size)
        with translate_errors("recording the volume in staging_volumes"), self._engine.begin() as conn:
            volumes_repo.insert_active(conn, volume, now=self._clock())
            row = volumes_repo.live_volume(conn, claim.namespace, claim.name, lock=True)
            if row is None:  # pragma: no cover - the insert or a concurrent one made it
                raise Denied(deny("record_failed", "leoflow-staging: the volume could not be recorded; retry",
                                  code=503, retriable=True))
            if row.state is VolumeState.RECLAIMING:
                raise Denied(_reclaiming(claim.name))
            if row.pvc_uid != claim.uid:
                # A live row of an earlier lifetime whose PVC is gone (the name now has a new uid).
                volumes_repo.close_missing(conn, row.id, now=self._clock(),
                                           detail=f"PVC re-created with uid {claim.uid}")
                volumes_repo.insert_active(conn, volume, now=self._clock())
