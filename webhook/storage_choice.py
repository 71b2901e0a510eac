"""Choosing a StorageClass that gives filesystem ReadWriteMany, or saying clearly why none does (pure).

StorageClasses do not declare access modes, so we rely on a capability map by provisioner
(after KubeVirt CDI's) and on the admin's ``leoflow.io/rwx`` annotation, which wins both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared import labels
from shared.objects import StorageClassInfo
from webhook.verdicts import Verdict, deny

# Provisioners known to give ReadWriteMany with volumeMode Filesystem.
RWX_PROVISIONERS = frozenset({
    "nfs.csi.k8s.io",
    "efs.csi.aws.com",
    "file.csi.azure.com",
    "kubernetes.io/azure-file",
    "cephfs.csi.ceph.com",
    "filestore.csi.storage.gke.io",
    "manila.csi.openstack.org",
    "driver.longhorn.io",
    "k8s-sigs.io/nfs-subdir-external-provisioner",
    "nfs.csi.netapp.com",
    "csi.trident.netapp.io",
    "kubernetes.io/glusterfs",
})
# Provisioners whose RWX (if any) is Block only or that are ReadWriteOnce: never chosen.
RWO_PROVISIONERS = frozenset({
    "rancher.io/local-path",
    "kubernetes.io/no-provisioner",
    "ebs.csi.aws.com",
    "kubernetes.io/aws-ebs",
    "pd.csi.storage.gke.io",
    "kubernetes.io/gce-pd",
    "disk.csi.azure.com",
    "kubernetes.io/azure-disk",
    "rbd.csi.ceph.com",
    "cinder.csi.openstack.org",
    "hostpath.csi.k8s.io",
    "k8s.io/minikube-hostpath",
    "topolvm.io",
    "openebs.io/local",
})


@dataclass(frozen=True)
class ClassPolicy:
    configured: str | None  # LEOFLOW_STAGING_STORAGE_CLASS
    extra_rwx_provisioners: tuple[str, ...] = ()


def _suffix_match(provisioner: str, known: frozenset[str]) -> bool:
    # Rook and OpenShift prefix the Ceph drivers with the operator namespace:
    # "rook-ceph.cephfs.csi.ceph.com", "openshift-storage.cephfs.csi.ceph.com".
    return provisioner in known or any(provisioner.endswith("." + k) for k in known if k.count(".") >= 2)


def rwx_capability(sc: StorageClassInfo, policy: ClassPolicy) -> bool | None:
    """True: gives filesystem RWX; False: known not to; None: unknown."""
    if sc.rwx_annotation is not None:
        value = sc.rwx_annotation.strip().lower()
        if value in ("true", "yes", "1"):
            return True
        if value in ("false", "no", "0"):
            return False
    if sc.provisioner in policy.extra_rwx_provisioners or _suffix_match(sc.provisioner, RWX_PROVISIONERS):
        return True
    if _suffix_match(sc.provisioner, RWO_PROVISIONERS):
        return False
    return None


def _seen(classes: Sequence[StorageClassInfo]) -> str:
    if not classes:
        return "none"
    def one(c: StorageClassInfo) -> str:
        marks = [c.provisioner] + (["default"] if c.is_default else []) + (
            [f"{labels.RWX_CLASS}={c.rwx_annotation}"] if c.rwx_annotation is not None else [])
        return f"{c.name} ({', '.join(marks)})"

    shown = ", ".join(one(c) for c in classes[:8])
    return shown + (f" and {len(classes) - 8} more" if len(classes) > 8 else "")


def choose_storage_class(
    classes: Sequence[StorageClassInfo], *, requested: str | None, policy: ClassPolicy
) -> str | Verdict:
    """The class for the run's PVC, or a denial that names the classes seen and the way out."""
    by_name = {c.name: c for c in classes}
    if requested:
        sc = by_name.get(requested)
        if sc is None:
            return deny("storage_class_not_found", f"leoflow-staging: the pod asks for StorageClass "
                        f"{requested!r} ({labels.STORAGE_CLASS}), which does not exist; classes seen: "
                        f"{_seen(classes)}")
        if rwx_capability(sc, policy) is False:
            return deny("storage_class_not_rwx", f"leoflow-staging: the pod asks for StorageClass "
                        f"{requested!r} (provisioner {sc.provisioner}), which cannot give ReadWriteMany "
                        "filesystem volumes; name an RWX class or drop the annotation")
        return requested
    if policy.configured:
        if policy.configured not in by_name:
            return deny("storage_class_not_found", f"leoflow-staging: the configured StorageClass "
                        f"{policy.configured!r} (LEOFLOW_STAGING_STORAGE_CLASS) does not exist; classes "
                        f"seen: {_seen(classes)}")
        return policy.configured
    qualifying = sorted((c for c in classes if rwx_capability(c, policy)),
                        key=lambda c: (not c.is_default, c.rwx_annotation is None, c.name))
    if qualifying:
        return qualifying[0].name
    return deny("no_rwx_class", "leoflow-staging: no ReadWriteMany StorageClass is available, so the "
                f"run's /staging volume cannot be created. Classes seen: {_seen(classes)}. A platform "
                "admin can mark an RWX-capable class with `kubectl annotate storageclass <name> "
                f"{labels.RWX_CLASS}=true` or set LEOFLOW_STAGING_STORAGE_CLASS")
