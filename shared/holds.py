"""Holds: a person keeps a run's volume past its normal reclaim (pure).

``leoflow-staging hold DAG_ID RUN_ID --for 72h`` sets ``held_until`` on the run's live row; the GC keeps a held
row whatever its run's state until the hold ends (it expires, or ``release`` ends it now).
"""

from __future__ import annotations

import datetime as dt
import re

MAX_HOLD = dt.timedelta(days=365)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


class HoldError(ValueError):
    """A hold's duration or reason cannot be used (the CLI exits 2 with this message)."""


def parse_hold_for(raw: str) -> dt.timedelta:
    """``--for``: a positive duration with a unit, e.g. ``90m``, ``72h``, ``7d`` (at most 365 days)."""
    text = raw.strip()
    match = _DURATION.fullmatch(text)
    if not match:
        if text.startswith("-"):
            raise HoldError(f"--for {raw!r}: a hold cannot last a negative time; give e.g. 72h")
        raise HoldError(f"--for {raw!r}: expected a duration with a unit (s, m, h or d), e.g. 90m, 72h or 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise HoldError(f"--for {raw!r}: a hold must last longer than 0; to end one, use `release`")
    if seconds > MAX_HOLD.total_seconds():
        raise HoldError(f"--for {raw!r}: at most {MAX_HOLD.days}d; hold again later to keep it longer")
    return dt.timedelta(seconds=seconds)


def check_reason(reason: str | None) -> str | None:
    """The hold's reason as stored (stripped; None when empty); at most 1000 characters."""
    if reason is None or not reason.strip():
        return None
    if len(reason) > 1000:
        raise HoldError(f"--reason is {len(reason)} characters long; at most 1000")
    return reason.strip()


def describe_hold(*, until: dt.datetime, by: str | None, reason: str | None) -> str:
    """Why a held volume is kept, as the GC logs it and the CLI prints it."""
    text = f"held until {until.isoformat()}"
    if by:
        text += f" by {by}"
    if reason:
        text += f": {reason}"
    return text
