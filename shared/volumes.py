"""Plain data about staging volumes and runs, shared by the webhook, the GC and the CLI."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class VolumeState(StrEnum):
    """A row's lifecycle: ``active`` -> ``reclaiming`` -> ``deleted``."""

    ACTIVE = "active"
    RECLAIMING = "reclaiming"  # the GC decided; the PVC delete may be in flight
    DELETED = "deleted"


class DeleteReason(StrEnum):
    """Why a volume was reclaimed (contracts 4), plus ``pvc_missing`` for a healed row."""

    RUN_SUCCEEDED = "run_succeeded"
    TTL_EXPIRED = "ttl_expired"
    ORPHANED = "orphaned"
    PVC_MISSING = "pvc_missing"  # the PVC vanished outside our control; the row is closed
    OPERATOR_REQUEST = "operator_request"  # `leoflow-staging reclaim`: a person freed a finished run's volume


@dataclass(frozen=True)
class RunId:
    """A DAG run's raw identity."""

    dag_id: str
    run_id: str


@dataclass(frozen=True)
class RunState:
    """A run as the orchestrator last recorded it (read from its runs table)."""

    state: str | None
    end_date: dt.datetime | None


@dataclass(frozen=True)
class VolumeRecord:
    """One row of ``staging_volumes``: one lifetime of one PVC."""

    id: int
    namespace: str
    pvc_name: str
    pvc_uid: str | None
    dag_id: str
    run_id: str
    storage_class: str
    size: str
    state: VolumeState
    created_at: dt.datetime
    reclaim_started_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None
    delete_reason: DeleteReason | None = None
    detail: str | None = None
    held_until: dt.datetime | None = None  # a hold (`leoflow-staging hold`) keeps the volume until then
    hold_reason: str | None = None
    held_by: str | None = None
    held_at: dt.datetime | None = None
    shared_claim: str | None = None  # shared-claim mode: the claim holding the run's directory ``pvc_name``
    bytes_freed: int | None = None  # shared-claim mode: what the directory held when the GC removed it

    @property
    def claim(self) -> str:
        """The PVC the run's pods mount: its own, or the namespace's shared claim."""
        return self.shared_claim or self.pvc_name

    @property
    def directory(self) -> str | None:
        """The run's directory on the shared claim (None in claim-per-run mode)."""
        return self.pvc_name if self.shared_claim else None

    @property
    def mode(self) -> str:
        return "shared" if self.shared_claim else "claim"

    @property
    def run(self) -> RunId:
        return RunId(self.dag_id, self.run_id)

    def held(self, now: dt.datetime) -> bool:
        """Whether a hold keeps this volume at ``now`` (a hold ends at ``held_until``)."""
        return self.held_until is not None and now < self.held_until


@dataclass(frozen=True)
class NewVolume:
    """What the webhook records after it has ensured a PVC."""

    namespace: str
    pvc_name: str
    pvc_uid: str
    dag_id: str
    run_id: str
    storage_class: str
    size: str
    shared_claim: str | None = None  # shared-claim mode: ``pvc_name`` is the run's directory on this claim
