"""The warning a pod gets when its run starts over on a new, empty volume (pure).

The run had a volume before and it was reclaimed (its row is ``deleted``): the pod's upstream inputs are gone.
``kubectl`` prints AdmissionReview warnings and an orchestrator's dispatcher can log them; each is at most 120
characters (the apiserver's advice) and plain ASCII (they travel as HTTP ``Warning`` headers).
"""

from __future__ import annotations

import datetime as dt

from shared.volumes import DeleteReason

MAX_WARNING = 120


def rerun_warning(*, deleted_at: dt.datetime | None, reason: DeleteReason | None) -> str:
    """``leoflow-staging: previous volume reclaimed <T> (<reason>); new and empty: clear the whole run``: at most
    115 characters for every reason (tests/unit/test_rerun_warning.py). "New and empty": this volume, created for
    this pod; "clear the whole run": re-run every task, the upstream ones included, not only the failed ones."""
    when = deleted_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ") if deleted_at else "earlier"
    why = f" ({reason.value})" if reason else ""
    return f"leoflow-staging: previous volume reclaimed {when}{why}; new and empty: clear the whole run"
