"""The storage profiles: the table's cells all carry a source, lookups, and the operator's JSON overrides."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import SettingsError
from shared.settings import from_env
from shared.storage_profiles import BUILT_IN, OPERATOR, Fact, ProfileError, lookup, parse_overrides
from webhook.factory import validate

ISSUE_24 = ("efs.csi.aws.com", "filestore.csi.storage.gke.io", "file.csi.azure.com", "cephfs.csi.ceph.com",
            "nfs.csi.k8s.io", "k8s-sigs.io/nfs-subdir-external-provisioner", "csi.juicefs.com",
            "driver.longhorn.io", "rancher.io/local-path")


@pytest.mark.parametrize("provisioner", ISSUE_24)
def test_every_known_fact_names_its_source(provisioner: str) -> None:
    profile = BUILT_IN[provisioner]
    for fact in (profile.rwx, profile.size_enforced, profile.provisioning, profile.limits):
        known = fact.value not in (None, "unknown")
        assert not known or fact.source.startswith(("https://", "docs/")), (provisioner, fact)
    assert profile.size_enforced.value is not None  # the issue's backends: each says whether size is honoured


def test_the_sizes_the_issue_names_as_ignored_are_ignored() -> None:
    for provisioner in ("efs.csi.aws.com", "nfs.csi.k8s.io", "k8s-sigs.io/nfs-subdir-external-provisioner",
                        "rancher.io/local-path"):
        assert BUILT_IN[provisioner].size_enforced.value is False
    assert BUILT_IN["filestore.csi.storage.gke.io"].speed == "minutes"
    assert BUILT_IN["rancher.io/local-path"].rwx.value is False  # RWX only in shared mode: annotate the class


def test_lookup_exact_then_operator_prefixed_ceph() -> None:
    assert lookup("nfs.csi.k8s.io") is BUILT_IN["nfs.csi.k8s.io"]
    assert lookup("rook-ceph.cephfs.csi.ceph.com") is BUILT_IN["cephfs.csi.ceph.com"]
    assert lookup("example.com/fs") is None
    assert lookup("evil-nfs.csi.k8s.io") is None  # a prefix counts only as a dotted namespace


def test_overrides_replace_the_given_facts_and_keep_the_others() -> None:
    table = parse_overrides(json.dumps({
        "nfs.csi.k8s.io": {"provisioning": "seconds", "source": "our bench, 2026-11"},
        "example.com/fs": {"rwx": True, "sizeEnforced": False},
    }))
    nfs = table["nfs.csi.k8s.io"]
    assert nfs.provisioning == Fact("seconds", "our bench, 2026-11")
    assert nfs.size_enforced == BUILT_IN["nfs.csi.k8s.io"].size_enforced
    custom = table["example.com/fs"]
    assert custom.rwx == Fact(True, OPERATOR) and custom.size_enforced == Fact(False, OPERATOR)
    assert custom.speed == "unknown"
    assert parse_overrides(None) == dict(BUILT_IN) == parse_overrides("  ")


@pytest.mark.parametrize(("raw", "says"), [
    ("{", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"x": 1}', "expected an object"),
    ('{"x": {"speed": "fast"}}', "unknown field(s) speed"),
    ('{"x": {"provisioning": "fast"}}', "seconds, minutes, unknown"),
    ('{"x": {"rwx": "yes"}}', "true, false or null"),
    ('{"x": {"limits": 3}}', "expected a string"),
    ('{"x": {"source": 3}}', "source: expected a string"),
])
def test_a_bad_override_is_a_clear_error(raw: str, says: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_overrides(raw)
    assert says in str(info.value)


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.fixed_dictionaries({}, optional={
    "rwx": st.one_of(st.none(), st.booleans()), "sizeEnforced": st.one_of(st.none(), st.booleans()),
    "provisioning": st.sampled_from(["seconds", "minutes", "unknown"]), "limits": st.text(max_size=20)}),
    max_size=4))
def test_any_valid_override_lands_in_the_table(data: dict[str, dict[str, object]]) -> None:
    table = parse_overrides(json.dumps(data))
    for provisioner, given_facts in data.items():
        profile = table[provisioner]
        if "sizeEnforced" in given_facts:
            assert profile.size_enforced.value == given_facts["sizeEnforced"]
        if "provisioning" in given_facts:
            assert profile.speed == given_facts["provisioning"]


def test_the_webhook_refuses_to_start_on_a_bad_profile_setting() -> None:
    settings = from_env({"LEOFLOW_STAGING_STORAGE_PROFILES": '{"x": {"provisioning": "fast"}}',
                         "LEOFLOW_STAGING_PENDING_EVENT_AFTER": "90s"})
    assert settings.pending_event_after.total_seconds() == 90
    with pytest.raises(SettingsError, match="LEOFLOW_STAGING_STORAGE_PROFILES"):
        validate(settings)
    validate(from_env({"LEOFLOW_STAGING_STORAGE_PROFILES": json.dumps({"x": {"rwx": True}})}))
