"""Storage profiles: what each ReadWriteMany provisioner honours, each fact with its public source (pure data).

A profile says, for one provisioner: whether it gives filesystem ReadWriteMany, whether it enforces the size a
claim requests, how long provisioning typically takes (``seconds``, ``minutes`` or ``unknown``: a class, never
an invented figure), and its per-volume limits. Every fact carries the URL it was read from; ``unknown`` means
no public source was found. docs/storage.md shows the same table with its reasoning.

Operators extend or override the table with ``LEOFLOW_STAGING_STORAGE_PROFILES`` (chart ``storage.profiles``): a
JSON object keyed by provisioner, each value giving any of ``rwx``, ``sizeEnforced``, ``provisioning``,
``limits`` and ``source``; a given field replaces the built-in fact (source: the operator's), the others stay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Speed = Literal["seconds", "minutes", "unknown"]
SPEEDS: tuple[Speed, ...] = ("seconds", "minutes", "unknown")
OPERATOR = "operator (LEOFLOW_STAGING_STORAGE_PROFILES)"
KUBEVIRT_CDI = ("https://github.com/kubevirt/containerized-data-importer/blob/main/pkg/storagecapabilities/"
                "storagecapabilities.go")


@dataclass(frozen=True)
class Fact:
    """One cell of the table: a value and where it was read (a URL; empty when the value is ``unknown``)."""

    value: bool | str | None
    source: str = ""


@dataclass(frozen=True)
class Profile:
    """What one provisioner honours. ``rwx``: True gives filesystem RWX, False never chosen (unless a class is
    annotated ``leoflow.io/rwx=true``), None unknown. ``size_enforced``: None unknown. ``provisioning``: a
    ``Speed``. ``limits``: free text (``unknown`` when no source)."""

    provisioner: str
    rwx: Fact
    size_enforced: Fact = Fact(None)
    provisioning: Fact = Fact("unknown")
    limits: Fact = Fact("unknown")

    @property
    def speed(self) -> Speed:
        value = self.provisioning.value
        return value if value in SPEEDS else "unknown"


class ProfileError(ValueError):
    """``LEOFLOW_STAGING_STORAGE_PROFILES`` is not a valid table of overrides."""


_EFS = "https://github.com/kubernetes-sigs/aws-efs-csi-driver"
_FILESTORE = "https://cloud.google.com/filestore/docs/csi-driver"
_AZURE = "https://learn.microsoft.com/en-us/azure/aks/azure-csi-files-storage-provision"
_CEPH_QUOTA = "https://docs.ceph.com/en/latest/cephfs/quota/"
_NFS_CSI_SIZE = "https://github.com/kubernetes-csi/csi-driver-nfs/issues/427"
_SUBDIR_SIZE = "https://github.com/kubernetes-sigs/nfs-subdir-external-provisioner/issues/51"
_JUICEFS_QUOTA = "https://juicefs.com/docs/community/guide/quota/"
_LONGHORN_RWX = "https://longhorn.io/docs/1.0.1/advanced-resources/rwx-workloads/"
_LOCAL_PATH = "https://github.com/rancher/local-path-provisioner/blob/master/README.md"

# The nine backends of docs/storage.md, each cell with its source.
_RICH: tuple[Profile, ...] = (
    Profile("efs.csi.aws.com", rwx=Fact(True, _EFS),
            size_enforced=Fact(False, _EFS),  # "EFS is fully elastic: the capacity is a placeholder"
            limits=Fact("one access point per volume; access points per file system are a fixed quota (1,000 on "
                        "the quotas page read; older pages say 120)", "https://docs.aws.amazon.com/efs/latest/ug/"
                        "limits.html")),
    Profile("filestore.csi.storage.gke.io", rwx=Fact(True, _FILESTORE),
            size_enforced=Fact(True, _FILESTORE),  # a whole instance (or multishare share) of the requested size
            provisioning=Fact("minutes", "https://github.com/kubernetes-sigs/gcp-filestore-csi-driver/pull/258"),
            limits=Fact("a Filestore instance per volume, minimum 1 TiB on most tiers; multishares: up to 80 "
                        "shares per enterprise instance", "https://cloud.google.com/filestore/docs/multishares")),
    Profile("file.csi.azure.com", rwx=Fact(True, KUBEVIRT_CDI),
            size_enforced=Fact(True, _AZURE),  # the share's quota is the claim's size
            provisioning=Fact("unknown", "https://github.com/kubernetes-sigs/azurefile-csi-driver/pull/418"),
            limits=Fact("creating over 100 shares in parallel is throttled by the storage resource provider "
                        "(useDataPlaneAPI)", "https://github.com/kubernetes-sigs/azurefile-csi-driver/blob/master/"
                        "deploy/example/e2e_usage.md")),
    Profile("cephfs.csi.ceph.com", rwx=Fact(True, "https://docs.ceph.com/en/latest/csi/cephfs/"),
            size_enforced=Fact(True, _CEPH_QUOTA)),  # subvolume quota; cooperative, kernel client >= 4.17
    Profile("nfs.csi.k8s.io", rwx=Fact(True, KUBEVIRT_CDI), size_enforced=Fact(False, _NFS_CSI_SIZE)),
    Profile("k8s-sigs.io/nfs-subdir-external-provisioner",
            rwx=Fact(True, "https://github.com/kubernetes-sigs/nfs-subdir-external-provisioner"),
            size_enforced=Fact(False, _SUBDIR_SIZE)),
    Profile("csi.juicefs.com", rwx=Fact(True, "https://juicefs.com/docs/csi/introduction/"),
            size_enforced=Fact(True, _JUICEFS_QUOTA)),  # directory quota (JuiceFS >= 1.1), synced ~10 s
    Profile("driver.longhorn.io", rwx=Fact(True, _LONGHORN_RWX),
            size_enforced=Fact(True, _LONGHORN_RWX),  # an NFS export of a block volume of the requested size
            limits=Fact("one NFS server (share-manager) per RWX volume", "https://github.com/longhorn/"
                        "longhorn-share-manager")),
    # RWX only with a shared filesystem configured (sharedFileSystemPath): annotate such a class leoflow.io/rwx=true.
    Profile("rancher.io/local-path", rwx=Fact(False, _LOCAL_PATH), size_enforced=Fact(False, _LOCAL_PATH),
            provisioning=Fact("seconds", "docs/storage.md (measured here: 2.5-3.2 s, shared mode)"),
            limits=Fact("a directory per volume; no capacity limit", _LOCAL_PATH)),
)
# Known only for their access modes (KubeVirt CDI's capability map): RWX filesystem, or never chosen.
_RWX_ONLY = ("kubernetes.io/azure-file", "manila.csi.openstack.org",
             "nfs.csi.netapp.com", "csi.trident.netapp.io", "kubernetes.io/glusterfs")
_NOT_RWX = ("kubernetes.io/no-provisioner", "ebs.csi.aws.com", "kubernetes.io/aws-ebs", "pd.csi.storage.gke.io",
            "kubernetes.io/gce-pd", "disk.csi.azure.com", "kubernetes.io/azure-disk", "rbd.csi.ceph.com",
            "cinder.csi.openstack.org", "hostpath.csi.k8s.io", "k8s.io/minikube-hostpath", "topolvm.io",
            "openebs.io/local")

BUILT_IN: Mapping[str, Profile] = {
    **{p: Profile(p, rwx=Fact(True, KUBEVIRT_CDI)) for p in _RWX_ONLY},
    **{p: Profile(p, rwx=Fact(False, KUBEVIRT_CDI)) for p in _NOT_RWX},
    **{p.provisioner: p for p in _RICH},
}


def _suffix_match(provisioner: str, known: str) -> bool:
    # Rook and OpenShift prefix the Ceph drivers with the operator namespace:
    # "rook-ceph.cephfs.csi.ceph.com", "openshift-storage.cephfs.csi.ceph.com".
    return known.count(".") >= 2 and provisioner.endswith("." + known)


def lookup(provisioner: str, table: Mapping[str, Profile] = BUILT_IN) -> Profile | None:
    """The profile of ``provisioner`` (exactly, else an operator-namespace-prefixed known driver), or None."""
    found = table.get(provisioner)
    if found is not None:
        return found
    for known, profile in table.items():
        if _suffix_match(provisioner, known):
            return profile
    return None


_FIELDS = {"rwx": "rwx", "sizeEnforced": "size_enforced", "provisioning": "provisioning", "limits": "limits"}


def _fact(key: str, value: Any, source: str, where: str) -> Fact:
    if key in ("rwx", "sizeEnforced"):
        if value is not None and not isinstance(value, bool):
            raise ProfileError(f"{where}.{key}: expected true, false or null")
    elif key == "provisioning":
        if value not in SPEEDS:
            raise ProfileError(f"{where}.provisioning: expected one of {', '.join(SPEEDS)}")
    elif not isinstance(value, str):
        raise ProfileError(f"{where}.limits: expected a string")
    return Fact(value, source)


def parse_overrides(raw: str | None, base: Mapping[str, Profile] = BUILT_IN) -> dict[str, Profile]:
    """The table with the operator's JSON overrides applied (``raw`` empty or None: the built-in table)."""
    table = dict(base)
    if not raw or not raw.strip():
        return table
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ProfileError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError("expected a JSON object keyed by provisioner")
    for provisioner, given in data.items():
        where = f"[{provisioner!r}]"
        if not provisioner or not isinstance(given, dict):
            raise ProfileError(f"{where}: expected an object of rwx, sizeEnforced, provisioning, limits, source")
        unknown = set(given) - set(_FIELDS) - {"source"}
        if unknown:
            raise ProfileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        source = given.get("source", OPERATOR)
        if not isinstance(source, str):
            raise ProfileError(f"{where}.source: expected a string")
        profile = lookup(provisioner, base) or Profile(provisioner, rwx=Fact(None))
        changes = {_FIELDS[k]: _fact(k, v, source, where) for k, v in given.items() if k in _FIELDS}
        table[provisioner] = replace(profile, provisioner=provisioner, **changes)
    return table
