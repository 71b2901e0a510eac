"""Plain data about GC sweeps as recorded in ``gc_sweeps`` (the GC's health, read by /metrics and the CLI)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum


class SweepStatus(StrEnum):
    COMPLETED = "completed"  # ran to its end (items may have failed: see the counts)
    SKIPPED = "skipped"  # another sweep held the single-flight lock; nothing was done


# The result counts a sweep records, in the order they are shown.
OUTCOMES = ("reclaimed", "terminating", "kept", "aborted", "adopted", "healed", "failed")


@dataclass(frozen=True)
class SweepRecord:
    """One sweep: when it ran, how it ended, how many items came out how."""

    started_at: dt.datetime
    finished_at: dt.datetime
    status: SweepStatus
    duration_seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # by outcome (OUTCOMES)


@dataclass(frozen=True)
class GcHealth:
    """What the sweep records say about the GC."""

    last_success: SweepRecord | None  # the newest completed sweep
    skipped_since_success: int  # skipped sweeps after it (or in the whole record when none completed)
    last_skipped_at: dt.datetime | None
