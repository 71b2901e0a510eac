from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from shared.objects import StorageClassInfo
from shared.storage_profiles import parse_overrides
from webhook.storage_choice import ClassPolicy, choose_storage_class, rwx_capability
from webhook.verdicts import Verdict

NFS = StorageClassInfo("nfs", "nfs.csi.k8s.io")
CEPHFS = StorageClassInfo("cephfs", "rook-ceph.cephfs.csi.ceph.com")
LOCAL = StorageClassInfo("local-path", "rancher.io/local-path", is_default=True)
CUSTOM = StorageClassInfo("custom", "example.com/fs")
MARKED = StorageClassInfo("marked", "example.com/fs", rwx_annotation="true")
UNMARKED_NFS = StorageClassInfo("nfs-off", "nfs.csi.k8s.io", rwx_annotation="false")
NONE = ClassPolicy(configured=None)


def test_capability_map_and_admin_annotation() -> None:
    assert rwx_capability(NFS, NONE) is True
    assert rwx_capability(CEPHFS, NONE) is True  # operator-prefixed Ceph driver
    assert rwx_capability(LOCAL, NONE) is False
    assert rwx_capability(CUSTOM, NONE) is None
    assert rwx_capability(MARKED, NONE) is True
    assert rwx_capability(UNMARKED_NFS, NONE) is False
    assert rwx_capability(CUSTOM, ClassPolicy(None, ("example.com/fs",))) is True


def test_default_class_only_if_it_qualifies() -> None:
    assert choose_storage_class([LOCAL, NFS], requested=None, policy=NONE) == "nfs"
    default_nfs = StorageClassInfo("nfs-default", "nfs.csi.k8s.io", is_default=True)
    assert choose_storage_class([NFS, default_nfs], requested=None, policy=NONE) == "nfs-default"


def test_no_rwx_class_denies_naming_classes_and_the_fix() -> None:
    verdict = choose_storage_class([LOCAL, CUSTOM], requested=None, policy=NONE)
    assert isinstance(verdict, Verdict) and verdict.reason == "no_rwx_class"
    assert "local-path (rancher.io/local-path, default)" in verdict.message
    assert "custom (example.com/fs)" in verdict.message
    assert "leoflow.io/rwx=true" in verdict.message
    empty = choose_storage_class([], requested=None, policy=NONE)
    assert isinstance(empty, Verdict) and "Classes seen: none" in empty.message


def test_configured_class_must_exist_and_is_trusted() -> None:
    assert choose_storage_class([CUSTOM], requested=None, policy=ClassPolicy("custom")) == "custom"
    verdict = choose_storage_class([NFS], requested=None, policy=ClassPolicy("gold"))
    assert isinstance(verdict, Verdict) and "'gold'" in verdict.message


def test_requested_class_must_exist_and_not_be_rwo() -> None:
    assert choose_storage_class([NFS, CUSTOM], requested="custom", policy=NONE) == "custom"
    rwo = choose_storage_class([LOCAL, NFS], requested="local-path", policy=NONE)
    assert isinstance(rwo, Verdict) and rwo.reason == "storage_class_not_rwx"
    missing = choose_storage_class([NFS], requested="gold", policy=NONE)
    assert isinstance(missing, Verdict) and missing.reason == "storage_class_not_found"


classes = st.lists(st.builds(
    StorageClassInfo, name=st.text("abcxyz-", min_size=1, max_size=6),
    provisioner=st.sampled_from(["nfs.csi.k8s.io", "rancher.io/local-path", "example.com/x", "efs.csi.aws.com",
                                 "filestore.csi.storage.gke.io"]),
    is_default=st.booleans(), rwx_annotation=st.sampled_from([None, "true", "false"])), max_size=6)


@given(classes)
def test_a_chosen_class_always_qualifies(seen: list[StorageClassInfo]) -> None:
    chosen = choose_storage_class(seen, requested=None, policy=NONE)
    if isinstance(chosen, Verdict):
        assert not any(rwx_capability(c, NONE) for c in seen)
    else:
        assert any(c.name == chosen and rwx_capability(c, NONE) for c in seen)


FILESTORE = StorageClassInfo("filestore", "filestore.csi.storage.gke.io", is_default=True)
SHARED_LOCAL = StorageClassInfo("shared-local", "rancher.io/local-path", rwx_annotation="true")


def test_among_eligible_classes_the_faster_provisioning_wins_where_known() -> None:
    assert choose_storage_class([FILESTORE, NFS], requested=None, policy=NONE) == "nfs"  # minutes lose to unknown
    assert choose_storage_class([NFS, SHARED_LOCAL], requested=None, policy=NONE) == "shared-local"  # seconds
    assert choose_storage_class([FILESTORE], requested=None, policy=NONE) == "filestore"  # the only one: as today
    # The admin's word still wins: the configured class, a pod's requested class, the annotation both ways.
    assert choose_storage_class([FILESTORE, NFS], requested=None, policy=ClassPolicy("filestore")) == "filestore"
    assert choose_storage_class([FILESTORE, NFS], requested="filestore", policy=NONE) == "filestore"
    off = StorageClassInfo("local-off", "rancher.io/local-path", rwx_annotation="false")
    assert choose_storage_class([FILESTORE, off], requested=None, policy=NONE) == "filestore"


def test_an_operator_profile_changes_the_choice() -> None:
    measured = ClassPolicy(None, profiles=parse_overrides('{"filestore.csi.storage.gke.io": {"provisioning": '
                                                          '"seconds"}, "nfs.csi.k8s.io": {"rwx": false}}'))
    assert choose_storage_class([FILESTORE, NFS], requested=None, policy=measured) == "filestore"


_RANK = {"seconds": 0, "unknown": 1, "minutes": 2}


@given(classes)
def test_no_eligible_class_provisions_faster_than_the_chosen_one(seen: list[StorageClassInfo]) -> None:
    assume(len({c.name for c in seen}) == len(seen))  # class names are unique in a cluster
    chosen = choose_storage_class(seen, requested=None, policy=NONE)
    if isinstance(chosen, Verdict):
        return

    def rank(c: StorageClassInfo) -> int:
        profile = NONE.profile(c)
        return _RANK[profile.speed] if profile else 1

    winner = next(c for c in seen if c.name == chosen)
    assert all(rank(winner) <= rank(c) for c in seen if rwx_capability(c, NONE))
