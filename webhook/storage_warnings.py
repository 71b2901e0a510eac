"""The AdmissionReview ``warnings`` of the admission that creates a run's claim, from its class's profile (pure).

``kubectl`` prints them (``Warning: ...``) and API clients see them as HTTP ``Warning: 299`` headers. Each is at
most ``MAX_WARNING`` characters: long class or provisioner names are shortened, never the facts.
"""

from __future__ import annotations

from shared.storage_profiles import Profile

MAX_WARNING = 120  # what kube-apiserver shows in full (webhook.review keeps every warning under it too)
PREFIX = "leoflow-staging: "
_ELLIPSIS = "..."


def _fit(template: str, parts: dict[str, str]) -> str:
    """``template`` filled with ``parts``, the longest part shortened (with "...") until the text fits."""
    parts = dict(parts)
    text = template.format(**parts)
    while len(text) > MAX_WARNING:
        key = max(parts, key=lambda k: len(parts[k]))
        value = parts[key]
        if len(value) <= len(_ELLIPSIS):
            return text[:MAX_WARNING - len(_ELLIPSIS)] + _ELLIPSIS  # pragma: no cover - the fixed text fits
        cut = max(len(_ELLIPSIS), min(len(value) - 1, len(value) - (len(text) - MAX_WARNING)))
        parts[key] = value[:cut - len(_ELLIPSIS)] + _ELLIPSIS
        text = template.format(**parts)
    return text


def new_claim_warnings(*, storage_class: str, provisioner: str, size: str, profile: Profile | None) -> tuple[str, ...]:
    """What a user should know about the claim just created: its class ignores the requested size (one run can
    fill the backend for everyone) or provisions slowly (the run's first pod waits for it)."""
    if profile is None:
        return ()
    parts = {"cls": storage_class, "prov": provisioner, "size": size}
    out: list[str] = []
    if profile.size_enforced.value is False:
        out.append(_fit(PREFIX + "class {cls} ({prov}) ignores the requested size {size}", parts))
    if profile.speed == "minutes":
        out.append(_fit(PREFIX + "class {cls} ({prov}) takes minutes to provision; the run's pods wait", parts))
    return tuple(out)
