"""The small vocabulary of answers a handler gives: allow, patch, deny."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """A decision about one admission request, before it is put in the envelope."""

    allowed: bool
    reason: str  # a short machine word for metrics and logs, e.g. "patched", "no_rwx_class"
    message: str = ""
    code: int = 200
    patch: list[dict[str, Any]] | None = None
    warnings: tuple[str, ...] = field(default=())
    retriable: bool = False


def allow(reason: str, *, warnings: tuple[str, ...] = ()) -> Verdict:
    return Verdict(allowed=True, reason=reason, warnings=warnings)


def patched(ops: list[dict[str, Any]], *, reason: str = "patched", warnings: tuple[str, ...] = ()) -> Verdict:
    return Verdict(allowed=True, reason=reason, patch=ops or None, warnings=warnings)


def deny(reason: str, message: str, *, code: int = 403, retriable: bool = False) -> Verdict:
    return Verdict(allowed=False, reason=reason, message=message, code=code, retriable=retriable)


class Denied(Exception):
    """Raised by the provisioning shell to stop with a denial."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict
