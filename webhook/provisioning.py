"""Ensuring the run's PVC exists and is recorded: the webhook's only side effects.

Idempotent under concurrency: PVC create answers 409 to all but one caller, which then
read it; the row insert is ``ON CONFLICT DO NOTHING`` on the live-row unique index. The
row is read ``FOR SHARE``, so a GC transition to ``reclaiming`` is either visible here or
waits until this admission has finished.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.db import volumes_repo
from shared.db.engine import translate_errors
from shared.kube import AlreadyExists, KubeApi
from shared.objects import ClaimInfo, ClaimSpec, StorageClassInfo
from shared.volumes import NewVolume, VolumeRecord, VolumeState
from webhook.intent import StagingIntent
from webhook.storage_choice import ClassPolicy, choose_storage_class
from webhook.storage_warnings import new_claim_warnings
from webhook.verdicts import Denied, Verdict, deny
from webhook.volume_choice import check_row

if TYPE_CHECKING:
    import sqlalchemy as sa

Clock = Callable[[], dt.datetime]
ClaimLookup = Callable[[str, str, "str | None"], "ClaimInfo | None"]  # (namespace, name, expected uid)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ClassSource(Protocol):
    """The StorageClasses: may answer from a cache; with ``fresh=True`` they are listed directly."""

    def __call__(self, *, fresh: bool = False) -> list[StorageClassInfo]: ...


@dataclass
class Deadline:
    """The time budget of one admission, counted from ``started`` (``time.monotonic()``: the request's arrival
    where the server can tell it, else now); a step starts only if its worst case still fits."""

    budget: float
    started: float = field(default_factory=time.monotonic)

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
    provisioner: str = ""  # of the class chosen, when this call created the claim
    warnings: tuple[str, ...] = ()  # for the admission that created the claim (its class's profile)
    previous: VolumeRecord | None = None  # created for a run whose earlier volume was reclaimed (its newest row)
    shared_claim: str | None = None  # shared-claim mode: ``pvc_name`` is the run's directory on this claim


def _reclaiming(name: str) -> Verdict:
    return deny("reclaiming", f"leoflow-staging: the run's staging PVC {name!r} is being reclaimed by the "
                "GC (its run had finished); retry in a few seconds",
                code=409, retriable=True)


def _terminating(name: str) -> Verdict:
    return deny("pvc_terminating", f"leoflow-staging: the run's staging PVC {name!r} is being deleted "
                "(Terminating, possibly held by a pod that still uses it); retry once it is gone",
                code=409, retriable=True)


def _reclaiming_directory(name: str, shared: str) -> Verdict:
    return deny("reclaiming", f"leoflow-staging: the run's staging directory {name!r} on the shared claim "
                f"{shared!r} is being removed by the GC (its run had finished); retry in a few seconds",
                code=409, retriable=True)


def _no_shared_claim(namespace: str, shared: str) -> Verdict:
    return deny("no_shared_claim", f"leoflow-staging: runs get a directory on the shared PVC {shared!r} "
                f"(shared-claim mode), and namespace {namespace!r} has no PVC of that name; create it "
                "(ReadWriteMany) or ask the platform team")


def _not_ours(claim: ClaimInfo) -> Verdict:
    return deny("pvc_not_ours", f"leoflow-staging: a PVC named {claim.name!r} already exists in namespace "
                f"{claim.namespace!r} but does not belong to this run (managed-by, instance or identity "
                "annotations differ); refusing to adopt it. Remove or rename that PVC.")


class VolumeProvisioner:
    """Ensures a run's PVC and its ``staging_volumes`` row."""

    def __init__(self, *, engine: sa.Engine, reader: sa.Engine, kube: KubeApi, classes: ClassSource,
                 read_claim: ClaimLookup, class_policy: ClassPolicy, db_timeout: float, kube_timeout: float,
                 shared_claim: str | None = None, shared_class: str | None = None, shared_size: str = "1Ti",
                 clock: Clock = _utcnow) -> None:
        self._engine, self._kube, self._classes = engine, kube, classes
        self._reader = reader  # an autocommit engine for the warm path's single read
        self._read_claim = read_claim  # (namespace, name, the row's uid): a watch-fed cache, else the API
        self._policy = class_policy
        self._db_t, self._kube_t = db_timeout, kube_timeout
        self._clock = clock
        self.shared_claim = shared_claim  # the shared-claim mode for new runs (None: a claim per run)
        self.shared_class, self.shared_size = shared_class, shared_size  # create a missing shared claim so

    def choose_class(self, intent: StagingIntent, deadline: Deadline) -> StorageClassInfo:
        deadline.check("listing StorageClasses", self._kube_t)
        classes = self._classes()
        chosen = choose_storage_class(classes, requested=intent.requested_class, policy=self._policy)
        if isinstance(chosen, Verdict) and chosen.reason in ("no_rwx_class", "storage_class_not_found"):
            deadline.check("listing StorageClasses", self._kube_t)  # a class may just have been added
            classes = self._classes(fresh=True)
            chosen = choose_storage_class(classes, requested=intent.requested_class, policy=self._policy)
        if isinstance(chosen, Verdict):
            raise Denied(chosen)
        return next(c for c in classes if c.name == chosen)

    def ensure(self, namespace: str, intent: StagingIntent, deadline: Deadline) -> Ensured:
        """Make sure the run's PVC exists and is recorded; raise ``Denied`` when it cannot be.

        Warm path (the run's claim exists): one database read and a claim look-up from the watch-fed cache.
        """
        name = intent.pvc_name
        deadline.check("reading staging_volumes", self._db_t + self._kube_t)
        with translate_errors("reading staging_volumes"):
            found = volumes_repo.read_live_volume(self._reader, namespace, name)
        row = check_row(found, dag_id=intent.dag_id, run_id=intent.run_id)
        if isinstance(row, Verdict):  # a name collision: never share
            raise Denied(row)
        if row is not None and row.shared_claim is not None:  # the row's mode wins over today's setting
            kept = self._recorded_directory(namespace, row, deadline)
            if kept is not None:
                return kept
            row = None
        if row is None and self.shared_claim is not None:
            return self._new_directory(namespace, intent, self.shared_claim, deadline)
        if row is not None:
            if row.state is VolumeState.RECLAIMING:
                raise Denied(_reclaiming(name))
            claim = self._read_claim(namespace, name, row.pvc_uid)
            if claim is not None and claim.terminating:
                raise Denied(_terminating(name))
            if claim is not None and claim.uid == row.pvc_uid:
                return Ensured(name, created=False, storage_class=row.storage_class)
            # The recorded PVC is gone (deleted outside our control): close that lifetime.
            with translate_errors("closing a stale staging_volumes row"), self._engine.begin() as conn:
                volumes_repo.close_missing(conn, row.id, now=self._clock(),
                                           detail="PVC not found at admission; a new one was created")
        chosen = self.choose_class(intent, deadline)
        storage_class = chosen.name
        spec = ClaimSpec(namespace=namespace, name=name, dag_id=intent.dag_id,
                         run_id=intent.run_id, storage_class=storage_class, size=intent.size)
        deadline.check("creating the PVC", 2 * self._kube_t)
        created = True
        try:
            claim = self._kube.create_claim(spec)
        except AlreadyExists:
            created = False
            found_claim = self._kube.read_claim(namespace, name)
            if found_claim is None:
                raise Denied(deny("pvc_race", f"leoflow-staging: PVC {name!r} was deleted while "
                                  "being attached; retry", code=409, retriable=True)) from None
            claim = found_claim
        if not claim.belongs_to(intent.dag_id, intent.run_id, self._kube.instance):
            raise Denied(_not_ours(claim))
        if claim.terminating:
            raise Denied(_terminating(name))
        deadline.check("recording the volume", self._db_t)
        previous = self._record(claim, spec, created=created)
        if not created:
            return Ensured(name, created=False, storage_class=claim.storage_class or storage_class,
                           pvc_uid=claim.uid)
        warnings = new_claim_warnings(storage_class=storage_class, provisioner=chosen.provisioner,
                                      size=intent.size, profile=self._policy.profile(chosen))
        return Ensured(name, created=True, storage_class=storage_class, pvc_uid=claim.uid,
                       provisioner=chosen.provisioner, warnings=warnings, previous=previous)

    def _recorded_directory(self, namespace: str, row: VolumeRecord, deadline: Deadline) -> Ensured | None:
        """A run recorded in the shared-claim mode: its directory, while the claim recorded holds it; None once
        that claim is gone (the row is then closed: its directories went with it)."""
        shared = row.shared_claim
        assert shared is not None
        if row.state is VolumeState.RECLAIMING:
            raise Denied(_reclaiming_directory(row.pvc_name, shared))
        deadline.check("reading the shared claim", self._kube_t)
        claim = self._read_claim(namespace, shared, row.pvc_uid)
        if claim is not None and claim.terminating:
            raise Denied(_terminating(shared))
        if claim is not None and claim.uid == row.pvc_uid:
            return Ensured(row.pvc_name, created=False, storage_class=row.storage_class, shared_claim=shared)
        with translate_errors("closing a stale staging_volumes row"), self._engine.begin() as conn:
            volumes_repo.close_missing(conn, row.id, now=self._clock(),
                                       detail=f"shared claim {shared} not found at admission (or re-created)")
        return None

    def shared_claim_of(self, namespace: str, shared: str, deadline: Deadline, *, create: bool = True
                        ) -> ClaimInfo | None:
        """The namespace's shared claim (created when the installation names a class for it, unless ``create``
        is off: a dry run, then None), or a denial saying it is missing or being deleted."""
        deadline.check("reading the shared claim", self._kube_t)
        claim = self._read_claim(namespace, shared, None)
        if claim is None and self.shared_class is not None:
            if not create:
                return None
            deadline.check("creating the shared claim", 2 * self._kube_t)
            try:
                claim = self._kube.create_shared_claim(namespace, shared, storage_class=self.shared_class,
                                                       size=self.shared_size)
            except AlreadyExists:  # a concurrent admission created it
                claim = self._kube.read_claim(namespace, shared)
        if claim is None:
            raise Denied(_no_shared_claim(namespace, shared))
        if claim.terminating:
            raise Denied(_terminating(shared))
        return claim

    def _new_directory(self, namespace: str, intent: StagingIntent, shared: str, deadline: Deadline) -> Ensured:
        """Record the run's directory on the namespace's shared claim (the kubelet creates it at the first mount,
        the pod's prepare container marks it)."""
        claim = self.shared_claim_of(namespace, shared, deadline)
        assert claim is not None
        volume = NewVolume(namespace=namespace, pvc_name=intent.pvc_name, pvc_uid=claim.uid, dag_id=intent.dag_id,
                           run_id=intent.run_id, storage_class=claim.storage_class or "", size=claim.size or "",
                           shared_claim=shared)
        deadline.check("recording the volume", self._db_t)
        with translate_errors("recording the volume in staging_volumes"), self._engine.begin() as conn:
            new = volumes_repo.insert_active(conn, volume, now=self._clock())
            row = volumes_repo.live_volume(conn, namespace, intent.pvc_name, lock=True)
            if row is None:  # pragma: no cover - the insert or a concurrent one made it
                raise Denied(deny("record_failed", "leoflow-staging: the volume could not be recorded; retry",
                                  code=503, retriable=True))
            if row.state is VolumeState.RECLAIMING:
                raise Denied(_reclaiming_directory(intent.pvc_name, row.shared_claim or shared))
            if row.shared_claim is None or row.pvc_uid != claim.uid:
                # A concurrent admission recorded another volume for the run (a claim, or an older shared claim):
                # the next admission of this pod resolves it from the row.
                raise Denied(deny("pvc_race", "leoflow-staging: the run's volume changed while being attached; "
                                  "retry", code=409, retriable=True))
            previous = (volumes_repo.last_deleted(conn, namespace, intent.pvc_name, dag_id=intent.dag_id,
                                                  run_id=intent.run_id) if new else None)
        return Ensured(intent.pvc_name, created=False, storage_class=row.storage_class, pvc_uid=claim.uid,
                       previous=previous, shared_claim=shared)

    def _record(self, claim: ClaimInfo, spec: ClaimSpec, *, created: bool) -> VolumeRecord | None:
        """Record the volume; when this call created the claim, return the run's newest reclaimed row (the run
        starts over on an empty volume), in the same transaction: the cold path's one extra indexed read."""
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
            if not created:
                return None
            return volumes_repo.last_deleted(conn, claim.namespace, claim.name, dag_id=spec.dag_id,
                                             run_id=spec.run_id)
