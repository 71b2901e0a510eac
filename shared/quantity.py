"""Kubernetes resource quantities (``50Gi``, ``1.5T``, ``500M``): a strict, pure parser."""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY = re.compile(r"^\+?(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                       r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[-+]?[0-9]{1,3}))?$")


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


@functools.lru_cache(maxsize=1024)  # a few sizes recur on every admission; errors are not cached
def parse_quantity(text: str) -> Decimal:
    """The value of ``text`` (e.g. bytes for a storage size). Negative quantities are rejected."""
    if len(text) > 64:
        raise QuantityError(f"{text[:20]!r}...: too long to be a quantity")
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity (examples: 50Gi, 500M, 1Ti)")
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{text!r} is not a number") from None
    if match.group("exp") is not None:
        return number.scaleb(int(match.group("exp")))
    suffix = match.group("suffix") or ""
    return number * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def format_bytes(value: Decimal) -> str:
    """A short human form (binary units), for messages."""
    amount = float(value)
    for unit in ("", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if abs(amount) < 1024:
            return f"{amount:.4g}{unit}"
        amount /= 1024
    return f"{amount:.4g}Ei"
