"""The JSON Patch that gives a pod its run's staging volume (pure, idempotent).

Ops are planned against the pod exactly as received: arrays that are absent are added
whole (``add /spec/volumes/-`` fails on a missing array), nothing already present is added
again (reinvocation yields no patch), keys are escaped per RFC 6901.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from shared import labels
from shared.naming import is_staging_pvc_name
from webhook.verdicts import Verdict, deny

CONTAINER_LISTS = ("initContainers", "containers")
_MOUNT_LEAF = posixpath.basename(labels.MOUNT_PATH)


@dataclass(frozen=True)
class MountPlan:
    """How the claim is mounted beyond the default (the whole claim, nothing else): in the shared-claim mode, the
    run's ``directory`` on it with ``subPath``; ``prepare`` (an init container, first of all) gives the run's
    volume its marker and a mode any uid can write (always in the shared-claim mode, optional for a claim)."""

    directory: str | None
    prepare: dict[str, Any] | None


def escape(key: str) -> str:
    """RFC 6901 escaping of one path segment: ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")


def _malformed(what: str) -> Verdict:
    return deny("malformed_pod", f"leoflow-staging: malformed pod: {what}", code=400)


def _conflict(message: str) -> Verdict:
    return deny("conflict", "leoflow-staging: " + message)


def _isolation(claim: str, where: str) -> Verdict:
    return deny("other_runs_pvc", f"leoflow-staging: the pod references another run's staging PVC "
                f"{claim!r} ({where}); a task pod may only mount its own run's volume")


def _list(obj: dict[str, Any], key: str, what: str) -> list[Any] | Verdict | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return _malformed(f"{what} must be a list of objects")
    return value


def _shared_isolation(claim: str, where: str) -> Verdict:
    return deny("other_runs_pvc", f"leoflow-staging: the pod mounts the namespace's shared staging claim {claim!r} "
                f"itself ({where}); a task pod only gets its own run's directory on it, mounted by the webhook")


def _volume_ops(spec: dict[str, Any], claim: str, plan: MountPlan | None) -> list[dict[str, Any]] | Verdict:
    volumes = _list(spec, "volumes", "spec.volumes")
    if isinstance(volumes, Verdict):
        return volumes
    ours = {"name": labels.VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}}
    present = False
    for vol in volumes or []:
        pvc = vol.get("persistentVolumeClaim")
        claim_name = pvc.get("claimName") if isinstance(pvc, dict) else None
        if isinstance(claim_name, str) and is_staging_pvc_name(claim_name) and claim_name != claim:
            return _isolation(claim_name, f"volume {vol.get('name')!r}")
        if _directory(plan) is not None and claim_name == claim and vol.get("name") != labels.VOLUME_NAME:
            return _shared_isolation(claim, f"volume {str(vol.get('name'))[:63]!r}")
        if vol.get("name") == labels.VOLUME_NAME:
            if claim_name != claim:
                return _conflict(f"the pod already has a volume named {labels.VOLUME_NAME!r} that is not "
                                 "the run's staging PVC; rename that volume")
            present = True
    if present:
        return []
    if volumes is None:
        return [{"op": "add", "path": "/spec/volumes", "value": [ours]}]
    return [{"op": "add", "path": "/spec/volumes/-", "value": ours}]


def _same_path(path: Any) -> bool:
    # normpath cannot turn a path without the mount's last segment into the mount path: skip it then
    return isinstance(path, str) and _MOUNT_LEAF in path and posixpath.normpath(path) == labels.MOUNT_PATH


def _directory(plan: MountPlan | None) -> str | None:
    return plan.directory if plan is not None else None


def mount_of(directory: str | None) -> dict[str, Any]:
    """The volumeMount every container gets."""
    mount = {"name": labels.VOLUME_NAME, "mountPath": labels.MOUNT_PATH}
    return mount if directory is None else {**mount, "subPath": directory}


ENV_VAR = {"name": labels.ENV_NAME, "value": labels.MOUNT_PATH}


def _container_ops(base: str, container: dict[str, Any], what: str,
                   plan: MountPlan | None) -> list[dict[str, Any]] | Verdict:
    ops: list[dict[str, Any]] = []
    mounts = _list(container, "volumeMounts", f"{what}.volumeMounts")
    if isinstance(mounts, Verdict):
        return mounts
    mount = mount_of(_directory(plan))
    have_mount = False
    for m in mounts or []:
        if m.get("name") == labels.VOLUME_NAME:
            if (not _same_path(m.get("mountPath")) or m.get("subPath") != mount.get("subPath")
                    or m.get("subPathExpr") or m.get("readOnly")):
                return _conflict(f"{what} mounts volume {labels.VOLUME_NAME!r} other than read-write at "
                                 f"{labels.MOUNT_PATH}")
            have_mount = True
        elif _same_path(m.get("mountPath")):
            return _conflict(f"{what} already mounts volume {m.get('name')!r} at {labels.MOUNT_PATH}; "
                             "that path is reserved for the run's staging volume")
    if not have_mount:
        ops.append({"op": "add", "path": f"{base}/volumeMounts", "value": [mount]} if mounts is None
                   else {"op": "add", "path": f"{base}/volumeMounts/-", "value": mount})
    env = _list(container, "env", f"{what}.env")
    if isinstance(env, Verdict):
        return env
    var = ENV_VAR
    have_env = False
    for e in env or []:
        if e.get("name") == labels.ENV_NAME:
            if e.get("value") != labels.MOUNT_PATH or "valueFrom" in e:
                return _conflict(f"{what} sets {labels.ENV_NAME} to something other than "
                                 f"{labels.MOUNT_PATH}; remove it, the webhook sets it")
            have_env = True
    if not have_env:
        ops.append({"op": "add", "path": f"{base}/env", "value": [var]} if env is None
                   else {"op": "add", "path": f"{base}/env/-", "value": var})
    return ops


def _meta_op(meta: dict[str, Any], field: str, key: str, value: str) -> list[dict[str, Any]] | Verdict:
    """The op setting ``metadata.<field>[key]`` to ``value`` (none when it has it; the map added whole when
    absent), or a denial when it names another run's volume."""
    current_map = meta.get(field)
    if current_map is not None and not isinstance(current_map, dict):
        return _malformed(f"metadata.{field} must be an object")
    current = (current_map or {}).get(key)
    if current is not None and current != value:
        return _isolation(str(current)[:63], f"{field[:-1]} {key}")
    if current_map is None:
        return [{"op": "add", "path": f"/metadata/{field}", "value": {key: value}}]
    if current is None:
        return [{"op": "add", "path": f"/metadata/{field}/{escape(key)}", "value": value}]
    return []


def _prepare_ops(spec: dict[str, Any], ours: dict[str, Any]) -> list[dict[str, Any]] | Verdict:
    """The prepare init container, first of the init containers (added last: the other ops index the lists as
    received). Present already (a reinvocation) with the same image and command: nothing."""
    inits = spec.get("initContainers")  # a list of objects: checked by the container loop before this
    for c in inits or []:
        if c.get("name") == ours["name"]:
            if (c.get("image"), c.get("command")) != (ours["image"], ours["command"]):
                return _conflict(f"the pod already has an init container named {ours['name']!r} that is not "
                                 "the webhook's; rename it")
            return []
    if inits is None:
        return [{"op": "add", "path": "/spec/initContainers", "value": [ours]}]
    return [{"op": "add", "path": "/spec/initContainers/0", "value": ours}]


def plan_patch(pod: dict[str, Any], claim: str, plan: MountPlan | None = None
               ) -> list[dict[str, Any]] | Verdict:
    """The ops that mount ``claim`` (with a ``plan``: the run's directory on it, the prepare init container) at
    /staging everywhere, or a denial naming the conflict.

    Every container and initContainer (native sidecars included) gets the mount and the
    env var; ephemeral containers cannot be set at CREATE and are left alone.
    """
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return _malformed("spec must be an object")
    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        return _malformed("metadata must be an object")
    ops = _volume_ops(spec, claim, plan)
    if isinstance(ops, Verdict):
        return ops
    for list_name in CONTAINER_LISTS:
        containers = _list(spec, list_name, f"spec.{list_name}")
        if isinstance(containers, Verdict):
            return containers
        for index, container in enumerate(containers or []):
            what = f"{'init container' if list_name == 'initContainers' else 'container'} " \
                   f"{str(container.get('name', index))[:63]!r}"
            more = _container_ops(f"/spec/{list_name}/{index}", container, what, plan)
            if isinstance(more, Verdict):
                return more
            ops += more
    mark = _meta_op(meta, "annotations", labels.PVC, claim)
    if isinstance(mark, Verdict):
        return mark
    ops += mark
    directory = _directory(plan)
    if directory is not None:  # the label the GC finds the directory's pods by before it removes the directory
        label = _meta_op(meta, "labels", labels.DIRECTORY, directory)
        if isinstance(label, Verdict):
            return label
        ops += label
    if plan is not None and plan.prepare is not None:
        prepare = _prepare_ops(spec, plan.prepare)
        if isinstance(prepare, Verdict):
            return prepare
        ops += prepare
    return ops



PREPARE_SECURITY = {  # uid 0 owns the directory the kubelet made: chmod and the marker need no capability
    "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
PREPARE_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def mount_plan(*, name: str, shared: bool, image: str, dag_id: str, run_id: str) -> MountPlan:
    """The mount of the run's volume ``name`` (``shared``: its directory on the shared claim, else its own claim)
    with the init container that writes the run's marker into it (the GC's cleanup of a directory checks it
    before removing anything) and makes it writable for every uid (mode 1777: tasks running as different
    non-root uids hand files over; nobody removes another's files or the marker)."""
    directory = name if shared else None
    return MountPlan(directory=directory, prepare={
        "name": labels.PREPARE_CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
        # --flag=VALUE: an id may start with '-' (argparse would read a separate one as a flag)
        "command": ["leoflow-staging", "directory", "prepare", f"--path={labels.MOUNT_PATH}",
                    f"--directory={name}", f"--dag-id={dag_id}", f"--run-id={run_id}"],
        "volumeMounts": [mount_of(directory)], "env": [ENV_VAR], "securityContext": PREPARE_SECURITY,
        "resources": PREPARE_RESOURCES,
    })
