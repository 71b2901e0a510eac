"""The admission path's JSON codec: the same values as ``json`` for every document an apiserver sends, a
clear ``ValueError`` for the rest, and always an answer when encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.codec import decode, encode

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | _text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_text, inner, max_size=6),
    max_leaves=40,
)


@given(_values)
def test_decode_agrees_with_json(value: Any) -> None:
    text = json.dumps(value)
    assert decode(text.encode()) == json.loads(text)
    assert decode(json.dumps(value, ensure_ascii=False).encode()) == json.loads(text)


@given(_values)
def test_encode_round_trips_through_json(value: Any) -> None:
    assert json.loads(encode(value)) == value


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,]", b"NaN", b"[Infinity]", b'"\\ud800"',
                                 b"[" * 2000 + b"]" * 2000, b"\xff\xfe", b"[1e400]",
                                 b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16"), b'{"a": 1} x'])
def test_what_an_apiserver_never_sends_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode(raw)


def test_an_integer_beyond_64_bits_becomes_a_float() -> None:
    assert decode(b"[18446744073709551616]") == [float(2**64)]


def test_a_lone_surrogate_is_still_encoded() -> None:
    value = {"uid": "a\ud800b", "n": 1}
    out = encode(value)
    assert out == b'{"uid":"a\\ud800b","n":1}' and json.loads(out) == value
