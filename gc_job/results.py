"""What happened to each decision when the executor applied it (plain data)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gc_job.plan import Decision


class Outcome(StrEnum):
    RECLAIMED = "reclaimed"  # the PVC is gone and the row is deleted
    TERMINATING = "terminating"  # delete issued; the PVC is still held (pods named in detail)
    CLEANING = "cleaning"  # shared-claim mode: the directory's cleanup is waiting or running; the next sweep goes on
    KEPT = "kept"
    ABORTED = "aborted"  # the run came back before the delete: the row is active again
    HEALED = "healed"
    ADOPTED = "adopted"
    FAILED = "failed"
    PLANNED = "planned"  # dry run


@dataclass(frozen=True)
class Result:
    decision: Decision
    outcome: Outcome
    detail: str = ""
    bytes_freed: int | None = None  # shared-claim mode: what the removed directory held

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED
