"""Recording each sweep in ``gc_sweeps`` (the GC's health for /metrics and `volumes --summary`).

Best effort: a record that cannot be written is logged and never changes the sweep's exit status.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from shared.db import sweeps_repo
from shared.errors import StagingError
from shared.sweeps import OUTCOMES, SweepRecord, SweepStatus

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger("leoflow_staging.gc")


def completed(summary: dict[str, Any], *, started_at: dt.datetime, finished_at: dt.datetime) -> SweepRecord:
    """The record of a sweep that ran, from its summary line (pure)."""
    counts = {name: int(summary.get("reclaimed_total" if name == "reclaimed" else name, 0)) for name in OUTCOMES}
    return SweepRecord(started_at=started_at, finished_at=finished_at, status=SweepStatus.COMPLETED,
                       duration_seconds=float(summary.get("duration_s", 0.0)), counts=counts)


def skipped(*, started_at: dt.datetime, finished_at: dt.datetime, duration: float) -> SweepRecord:
    return SweepRecord(started_at=started_at, finished_at=finished_at, status=SweepStatus.SKIPPED,
                       duration_seconds=duration)


def record(engine: sa.Engine, sweep: SweepRecord) -> None:
    try:
        sweeps_repo.save_sweep(engine, sweep)
    except StagingError as exc:
        log.warning("sweep_not_recorded", extra={"fields": {
            "event": "sweep_not_recorded", "status": sweep.status.value, "detail": str(exc)}})
