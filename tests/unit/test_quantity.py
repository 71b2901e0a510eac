from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.quantity import QuantityError, parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("50Gi", 50 * 2**30), ("1Ti", 2**40), ("500M", 500 * 10**6), ("1.5Gi", int(1.5 * 2**30)),
    ("1e3", 1000), ("1E3", 1000), ("10", 10), ("100m", Decimal("0.1")), ("+1Ki", 1024), (".5Ki", 512),
])
def test_known_quantities(text: str, value: int | Decimal) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "Gi", "-1Gi", "1GB", "1 Gi", "1.2.3", "lots", "1Gi ", "1e", "1x" * 50])
def test_rejected(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["Ki", "Mi", "Gi", "Ti", "k", "M", "G", ""]))
def test_suffixes_scale(n: int, suffix: str) -> None:
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}
    assert parse_quantity(f"{n}{suffix}") == n * scale[suffix]


@given(st.text(max_size=80))
def test_never_crashes(text: str) -> None:
    with contextlib.suppress(QuantityError):
        assert parse_quantity(text) >= 0
