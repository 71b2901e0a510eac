"""Naming rules: DNS-1123, <= 63 characters, deterministic, collision-free by construction."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from shared.naming import is_label_value, label_safe, pair_hash, pvc_name

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ids = st.text(min_size=0, max_size=300)


@given(ids, ids)
def test_pvc_name_is_a_dns_label(dag: str, run: str) -> None:
    name = pvc_name(dag, run)
    assert len(name) <= 63
    assert DNS1123.match(name), name
    assert name.startswith("leoflow-staging-")
    assert name.endswith(pair_hash(dag, run))
    assert pvc_name(dag, run) == name  # deterministic


@given(ids, ids, ids, ids)
def test_different_pairs_get_different_names(d1: str, r1: str, d2: str, r2: str) -> None:
    if (d1, r1) != (d2, r2):
        assert pair_hash(d1, r1) != pair_hash(d2, r2) or pvc_name(d1, r1) != pvc_name(d2, r2)


def test_the_classic_collision_is_avoided() -> None:
    assert pvc_name("a-b", "c") != pvc_name("a", "b-c")


def test_readable_parts_come_from_the_ids() -> None:
    name = pvc_name("etl_daily", "manual__2026-05-23T10:00:00+00:00")
    assert name.startswith("leoflow-staging-etl-daily-manual-202")
    assert len(name) <= 63


def test_long_ids_share_the_room() -> None:
    name = pvc_name("d" * 200, "r" * 200)
    assert "ddd" in name and "rrr" in name and len(name) == 63


@given(st.text(max_size=300))
def test_label_safe_is_always_a_label_value(value: str) -> None:
    safe = label_safe(value)
    assert is_label_value(safe), safe
    if is_label_value(value):
        assert safe == value


def test_label_safe_distinguishes_sanitised_ids() -> None:
    assert label_safe("a:b") != label_safe("a;b")


def test_ids_differing_only_by_case_or_punctuation_get_distinct_names() -> None:
    pairs = [("ETL", "r"), ("etl", "r"), ("e.tl", "r"), ("e-tl", "r"), ("e_tl", "r"), ("etl", "R"),
             ("etl", "r:1"), ("etl", "r-1"), ("etl", "r+1"), ("etl", "r 1")]
    names = {pvc_name(d, r) for d, r in pairs}
    assert len(names) == len(pairs)


LONG_HASH = re.compile(r"-[a-z2-7]{26}$")  # 130 bits of base32: a collision is out of reach


@given(ids, ids)
def test_names_carry_a_130_bit_hash(dag: str, run: str) -> None:
    name = pvc_name(dag, run)
    assert LONG_HASH.search(name), name
    assert len(pair_hash(dag, run)) * 5 >= 128


def test_name_examples() -> None:
    assert pvc_name("etl_daily", "manual__2026-05-23T10:00:00+00:00") == \
        "leoflow-staging-etl-daily-manual-202-bbfquqri2tfudhdh3tgt4okgas"
    assert pvc_name("a-b", "c") == "leoflow-staging-a-b-c-nfjhj5vynzxjaxjnmnqa7k5jg7"


@given(ids, ids, ids, ids)
def test_different_pairs_never_share_a_name(d1: str, r1: str, d2: str, r2: str) -> None:
    if (d1, r1) != (d2, r2):
        assert pvc_name(d1, r1) != pvc_name(d2, r2)
