"""Choosing a StorageClass that gives filesystem ReadWriteMany, or saying clearly why none does (pure).

StorageClasses do not declare access modes, so we rely on the storage profiles (``shared.storage_profiles``: a
capability map by provisioner after KubeVirt CDI's, with sizes and provisioning times) and on the admin's
``leoflow.io/rwx`` annotation, which wins both ways. Among several eligible classes, the faster provisioning
(where a profile knows it) wins; the configured class and a pod's requested class are taken as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared import labels, storage_profiles
from shared.objects import StorageClassInfo
from shared.storage_profiles import Profile
from webhook.verdicts import Verdict, deny


@dataclass(frozen=True)
class ClassPolicy:
    configured: str | None  # LEOFLOW_STAGING_STORAGE_CLASS
    extra_rwx_provisioners: tuple[str, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=lambda: dict(storage_profiles.BUILT_IN))

    def profile(self, sc: StorageClassInfo) -> Profile | None:
        return storage_profiles.lookup(sc.provisioner, self.profiles)


def rwx_capability(sc: StorageClassInfo, policy: ClassPolicy) -> bool | None:
    """True: gives filesystem RWX; False: known not to; None: unknown."""
    if sc.rwx_annotation is not None:
        value = sc.rwx_annotation.strip().lower()
        if value in ("true", "yes", "1"):
            return True
        if value in ("false", "no", "0"):
            return False
    if sc.provisioner in policy.extra_rwx_provisioners:
        return True
    profile = policy.profile(sc)
    rwx = profile.rwx.value if profile is not None else None
    return rwx if isinstance(rwx, bool) else None


_SPEED_RANK = {"seconds": 0, "unknown": 1, "minutes": 2}


def _preference(sc: StorageClassInfo, policy: ClassPolicy) -> tuple[int, bool, bool, str]:
    """Among eligible classes: the faster provisioning where the profile knows it (seconds, unknown, minutes),
    then as before: the default class, an annotated class, the name."""
    profile = policy.profile(sc)
    speed = _SPEED_RANK[profile.speed] if profile is not None else _SPEED_RANK["unknown"]
    return (speed, not sc.is_default, sc.rwx_annotation is None, sc.name)


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
    qualifying = sorted((c for c in classes if rwx_capability(c, policy)), key=lambda c: _preference(c, policy))
    if qualifying:
        return qualifying[0].name
    return deny("no_rwx_class", "leoflow-staging: no ReadWriteMany StorageClass is available, so the "
                f"run's /staging volume cannot be created. Classes seen: {_seen(classes)}. A platform "
                "admin can mark an RWX-capable class with `kubectl annotate storageclass <name> "
                f"{labels.RWX_CLASS}=true` or set LEOFLOW_STAGING_STORAGE_CLASS")
