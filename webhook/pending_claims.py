"""Watching a claim this process created until it is Bound (pure): what to do at each look.

The owner of a claim's provisioning figures is the one webhook worker whose PVC create call made it (every
other caller got 409 and never watches it), so a claim is counted at most once across workers and replicas.
That worker looks at its own watch-fed PVC cache: Bound -> observe created..Bound once and stop; still Pending
after ``pending_after`` -> tell it once (an Event naming the class and what the provisioner said), keep
watching; deleted, or another uid under the name -> stop. A worker that exits forgets its claims: they are then
not counted (an undercount, never a double count).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shared.objects import ClaimInfo

UNSEEN_GRACE = 30.0  # seconds a fresh cache may not yet show a claim just created before it counts as deleted
MAX_WATCH = 24 * 3600.0  # seconds after which a claim never Bound is dropped (memory stays bounded)


@dataclass(frozen=True)
class Watched:
    """A claim this process created, watched until it is Bound."""

    namespace: str
    name: str
    uid: str
    storage_class: str
    provisioner: str
    started: float  # time.monotonic() when the creating admission handed it over (after the create and the row)
    told: bool = False  # the still-Pending event was emitted


class Step(enum.Enum):
    WAIT = "wait"
    BOUND = "bound"  # observe now - started, stop watching
    SLOW = "slow"  # tell it is still Pending, keep watching
    GONE = "gone"  # stop watching, observe nothing


def assess(w: Watched, *, fresh: bool, claim: ClaimInfo | None, now: float, pending_after: float | None) -> Step:
    """The next step for ``w``, given what a (``fresh``) cache shows under its name at ``now``."""
    age = now - w.started
    if age > MAX_WATCH:
        return Step.GONE
    if not fresh:  # the cache cannot be trusted now: look again at the next tick
        return Step.WAIT
    if claim is None or claim.uid != w.uid:
        return Step.GONE if age > UNSEEN_GRACE else Step.WAIT
    if claim.phase == "Bound":
        return Step.BOUND
    if claim.terminating:
        return Step.GONE
    if pending_after is not None and not w.told and age >= pending_after:
        return Step.SLOW
    return Step.WAIT
