"""Plain-data views of the Kubernetes objects this product uses, and the PVC manifest it creates."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from shared import labels
from shared.naming import label_safe


@dataclass(frozen=True)
class StorageClassInfo:
    """What the class choice needs to know about a StorageClass."""

    name: str
    provisioner: str
    is_default: bool = False
    rwx_annotation: str | None = None  # the value of leoflow.io/rwx, if any


@dataclass(frozen=True)
class PodUse:
    """A pod that names a claim in its volumes (what holds a Terminating claim)."""

    name: str
    uid: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    inspect: bool = False  # a pod of `leoflow-staging inspect` (labelled leoflow.io/inspect): only reads the files

    @property
    def finished(self) -> bool:
        """Every container has terminated and none will run again (a pod never leaves these phases)."""
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class ClaimSpec:
    """The run's PVC as the webhook wants it."""

    namespace: str
    name: str
    dag_id: str
    run_id: str
    storage_class: str
    size: str


@dataclass(frozen=True)
class ClaimInfo:
    """A PVC as the API returned it."""

    namespace: str
    name: str
    uid: str
    dag_id: str | None  # from our identity annotations (None when absent)
    run_id: str | None
    managed: bool  # carries app.kubernetes.io/managed-by: leoflow-staging
    terminating: bool
    created_at: dt.datetime | None
    storage_class: str | None = None
    size: str | None = None
    instance: str = labels.DEFAULT_INSTANCE
    phase: str = ""  # status.phase: Pending, Bound, Lost ("" when absent)
    shared: bool = False  # a shared claim the webhook created (labelled leoflow.io/shared-claim)

    def belongs_to(self, dag_id: str, run_id: str, instance: str) -> bool:
        """Ours (managed-by), this installation's, and this run's."""
        return self.managed and self.instance == instance and self.dag_id == dag_id and self.run_id == run_id


@dataclass(frozen=True)
class EventSeen:
    """One Event about an object (core/v1 view), e.g. what a provisioner said about a claim."""

    reason: str
    message: str
    reporter: str  # reportingComponent, else source.component
    at: dt.datetime | None  # the last time it was observed

    @property
    def text(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


def event_seen(obj: dict[str, Any]) -> EventSeen:
    """An EventSeen from a core/v1 Event as JSON."""
    at = (_parse_time((obj.get("series") or {}).get("lastObservedTime")) or _parse_time(obj.get("lastTimestamp"))
          or _parse_time(obj.get("eventTime")) or _parse_time((obj.get("metadata") or {}).get("creationTimestamp")))
    return EventSeen(reason=str(obj.get("reason") or ""), message=str(obj.get("message") or "").strip(),
                     reporter=str(obj.get("reportingComponent") or (obj.get("source") or {}).get("component") or ""),
                     at=at)


def claim_manifest(spec: ClaimSpec, *, instance: str = labels.DEFAULT_INSTANCE) -> dict[str, Any]:
    """The PVC body (contracts 3): RWX, the class, the size, our labels and the raw ids. The
    instance label keeps two installations (two metadatabases) on one cluster apart."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {
                labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.INSTANCE: instance,
                labels.DAG_ID: label_safe(spec.dag_id),
                labels.RUN_ID: label_safe(spec.run_id),
            },
            "annotations": {labels.DAG_ID: spec.dag_id, labels.RUN_ID: spec.run_id},
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": spec.storage_class,
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": spec.size}},
        },
    }


def shared_claim_manifest(namespace: str, name: str, *, storage_class: str, size: str,
                          instance: str) -> dict[str, Any]:
    """The shared-claim mode's one claim of a namespace, when the webhook creates it (``storage.sharedClaim``'s
    class and size): RWX, labelled as this installation's shared claim, with no run's identity (the GC never
    adopts nor deletes it: it holds every run's directory)."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.INSTANCE: instance,
                                labels.SHARED_CLAIM: "true"}},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class, "volumeMode": "Filesystem",
                 "resources": {"requests": {"storage": size}}},
    }


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def claim_info(obj: dict[str, Any]) -> ClaimInfo:
    """A ClaimInfo from a PVC as JSON (camelCase, as the API sends it)."""
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    lab = meta.get("labels") or {}
    spec = obj.get("spec") or {}
    return ClaimInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        dag_id=ann.get(labels.DAG_ID),
        run_id=ann.get(labels.RUN_ID),
        managed=lab.get(labels.MANAGED_BY) == labels.MANAGED_BY_VALUE,
        terminating=bool(meta.get("deletionTimestamp")),
        created_at=_parse_time(meta.get("creationTimestamp")),
        storage_class=spec.get("storageClassName"),
        size=((spec.get("resources") or {}).get("requests") or {}).get("storage"),
        instance=str(lab.get(labels.INSTANCE, labels.DEFAULT_INSTANCE)),
        phase=str((obj.get("status") or {}).get("phase") or ""),
        shared=lab.get(labels.SHARED_CLAIM) == "true",
    )


def storage_class_info(obj: dict[str, Any]) -> StorageClassInfo:
    """A StorageClassInfo from a StorageClass as JSON."""
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    default = (ann.get("storageclass.kubernetes.io/is-default-class") == "true"
               or ann.get("storageclass.beta.kubernetes.io/is-default-class") == "true")
    return StorageClassInfo(
        name=meta.get("name", ""),
        provisioner=obj.get("provisioner", ""),
        is_default=default,
        rwx_annotation=ann.get(labels.RWX_CLASS),
    )


ClaimKey = tuple[str, str, str]  # (namespace, name, uid)


def claim_key(obj: dict[str, Any]) -> ClaimKey:
    """(namespace, name, uid) of a PVC as JSON: what the GC keeps of each listed claim (the namespace
    interned: the 100k claims of one namespace share one string)."""
    meta = obj.get("metadata") or {}
    return sys.intern(meta.get("namespace", "")), meta.get("name", ""), meta.get("uid", "")


def pod_use(obj: dict[str, Any]) -> tuple[PodUse, frozenset[str]]:
    """What the GC keeps of a pod as JSON: its name, uid, phase, whether it is an inspect pod, and the claims its
    volumes name."""
    meta = obj.get("metadata") or {}
    claims = frozenset(name for vol in (obj.get("spec") or {}).get("volumes") or []
                       if isinstance(name := (vol.get("persistentVolumeClaim") or {}).get("claimName"), str))
    return (PodUse(name=meta.get("name", "?"), uid=meta.get("uid", ""),
                   phase=(obj.get("status") or {}).get("phase") or "Unknown",
                   inspect=(meta.get("labels") or {}).get(labels.INSPECT) == "true"), claims)


def claim_users(pods: Iterable[dict[str, Any]], wanted: Collection[str]) -> dict[str, list[PodUse]]:
    """For one page of a pod list: the pods naming each of the ``wanted`` claims (claims no pod names are
    absent). Only these small projections outlive the page."""
    users: dict[str, list[PodUse]] = {}
    for obj in pods:
        use, claims = pod_use(obj)
        for claim in claims:
            if claim in wanted:
                users.setdefault(claim, []).append(use)
    return users
