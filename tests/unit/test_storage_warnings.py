"""The warnings of a claim's creation: exact texts, and never over 120 characters whatever the names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.storage_profiles import BUILT_IN, lookup
from webhook.storage_warnings import MAX_WARNING, new_claim_warnings


def test_a_class_that_ignores_the_size_says_so() -> None:
    assert new_claim_warnings(storage_class="efs-sc", provisioner="efs.csi.aws.com", size="50Gi",
                              profile=BUILT_IN["efs.csi.aws.com"]) == (
        "leoflow-staging: class efs-sc (efs.csi.aws.com) ignores the requested size 50Gi",)


def test_a_slow_class_says_the_pods_wait_and_an_honest_one_says_nothing() -> None:
    [slow] = new_claim_warnings(storage_class="filestore", provisioner="filestore.csi.storage.gke.io", size="1Ti",
                                profile=BUILT_IN["filestore.csi.storage.gke.io"])
    assert slow == ("leoflow-staging: class filestore (filestore.csi.storage.gke.io) takes minutes to provision; "
                    "the run's pods wait")
    assert new_claim_warnings(storage_class="ceph", provisioner="cephfs.csi.ceph.com", size="1Gi",
                              profile=BUILT_IN["cephfs.csi.ceph.com"]) == ()
    assert new_claim_warnings(storage_class="x", provisioner="example.com/x", size="1Gi", profile=None) == ()


names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=300)


@given(names, st.sampled_from(sorted(BUILT_IN)), st.sampled_from(["1Gi", "50Gi", "1500Mi", "1Ti"]))
def test_warnings_fit_and_keep_their_facts(storage_class: str, provisioner: str, size: str) -> None:
    profile = lookup(provisioner)
    out = new_claim_warnings(storage_class=storage_class, provisioner=provisioner, size=size, profile=profile)
    assert profile is not None
    assert len(out) == (profile.size_enforced.value is False) + (profile.speed == "minutes")
    for text in out:
        assert len(text) <= MAX_WARNING and text.startswith("leoflow-staging: class ")
        assert text.endswith(f"ignores the requested size {size}") or text.endswith("the run's pods wait")
        if len(storage_class) + len(provisioner) < 40:
            assert storage_class in text and provisioner in text  # short names are never cut
