"""The shared-claim mode's cleanup pod (pure): its manifest, and what its status says.

A run's directory on a shared claim is removed by a short-lived pod in its namespace that mounts the whole claim
and runs ``leoflow-staging directory cleanup`` (shared.run_directory.cleanup: marker checked, renamed away,
removed without following symlinks, bytes measured). Its one-line JSON result is the container's termination
message, which the GC reads from the pod's status: no exec, no logs permission.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared import labels
from shared.volumes import VolumeRecord

ROOT = "/volume"
SECURITY = {  # root without DAC_OVERRIDE cannot enter the tasks' own 0755 folders; FOWNER for the sticky dir
    "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE", "FOWNER"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def pod_name(row: VolumeRecord, attempt: int) -> str:
    """Deterministic per (row, attempt): a GC that crashed after creating it finds it again."""
    digest = hashlib.sha256(f"{row.namespace}\0{row.pvc_name}\0{row.id}".encode()).hexdigest()[:10]
    return f"leoflow-staging-cleanup-{row.id}-{digest}-{attempt}"[:63].rstrip("-")


def manifest(row: VolumeRecord, *, image: str, instance: str, attempt: int,
             deadline_seconds: int = 3600, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cleanup pod of ``row``'s directory (attempt ``attempt``: a failed pod is kept for the on-call and the
    next attempt gets the next name)."""
    assert row.shared_claim is not None and row.directory is not None
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(row, attempt), "namespace": row.namespace,
            "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.INSTANCE: instance,
                       labels.CLEANUP: str(row.id)},
            "annotations": {labels.DAG_ID: row.dag_id, labels.RUN_ID: row.run_id},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline_seconds,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "cleanup", "image": image, "imagePullPolicy": "IfNotPresent",
                # --flag=VALUE: an id may start with '-' (argparse would read a separate one as a flag)
                "command": ["leoflow-staging", "directory", "cleanup", f"--root={ROOT}", f"--directory={row.directory}",
                            f"--dag-id={row.dag_id}", f"--run-id={row.run_id}",
                            "--result-file=/dev/termination-log"],
                "volumeMounts": [{"name": "shared", "mountPath": ROOT}],
                "securityContext": SECURITY, "resources": resources or RESOURCES,
                "terminationMessagePolicy": "File",
            }],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": row.shared_claim}}],
        },
    }


class State(StrEnum):
    RUNNING = "running"  # not finished yet (Pending or Running)
    REMOVED = "removed"  # the directory is gone (or was already): ``bytes`` is what it held
    REFUSED = "refused"  # the cleanup checked and refused (marker missing or another run's): nothing removed
    FAILED = "failed"  # crashed, killed, out of time: the next attempt resumes


@dataclass(frozen=True)
class Status:
    state: State
    detail: str
    bytes: int | None = None
    files: int | None = None


def status_of(pod: dict[str, Any]) -> Status:
    """What a cleanup pod (as JSON) says: its phase and its container's termination message."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    terminated: dict[str, Any] = {}
    for c in status.get("containerStatuses") or []:
        terminated = ((c or {}).get("state") or {}).get("terminated") or {}
    if phase not in ("Succeeded", "Failed") and not terminated:
        waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason")
                   for c in status.get("containerStatuses") or []]
        why = ", ".join(w for w in waiting if w) or status.get("reason") or phase
        return Status(State.RUNNING, f"cleanup pod {phase} ({why})")
    message = str(terminated.get("message") or "").strip()
    try:
        result = json.loads(message.splitlines()[-1]) if message else {}
    except ValueError:
        result = {}
    if not isinstance(result, dict):
        result = {}
    if terminated.get("exitCode") == 0 and result.get("status") in ("removed", "absent"):
        size, files = result.get("bytes"), result.get("files")
        return Status(State.REMOVED, f"directory {result['status']}" + (" (resumed)" if result.get("resumed") else ""),
                      bytes=size if isinstance(size, int) else 0, files=files if isinstance(files, int) else 0)
    if result.get("status") == "refused":
        return Status(State.REFUSED, f"cleanup refused: {str(result.get('error'))[:500]}")
    why = (terminated.get("reason") or status.get("reason") or phase)
    return Status(State.FAILED, f"cleanup pod {phase} ({why}, exit code {terminated.get('exitCode')})"
                  + (f": {message[:300]}" if message else ""))
