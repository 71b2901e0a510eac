"""`leoflow-staging inspect`: the read-only pod that mounts a run's volume and what its listing says (pure).

The pod runs the product image as a non-root user (``--uid``, so that files a task wrote with mode 0600 as that
uid can be read), mounts the claim read-only at /staging, has small resource limits and ends by itself after
its TTL (``activeDeadlineSeconds``). It does not carry the opt-in label, so the webhook never touches it; it
carries ``leoflow.io/inspect``, by which the GC deletes it when the run's volume is reclaimed (an inspect pod
never keeps a reclaimed volume alive).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from shared import labels

MOUNT = "/staging"
DEFAULT_UID = 65532
# Walks /staging without following symlinks (a link is listed as a link, never read through) and prints one JSON
# line per file: path relative to /staging, size, modification time; at most LIMIT files, then a summary line.
LISTING_SCRIPT = r"""
import json, os, sys
limit, root, n, total = int(sys.argv[1]), (sys.argv[2:] or ["/staging"])[0], 0, 0
for top, dirs, files in os.walk(root, onerror=lambda e: print(json.dumps({"error": str(e)}))):
    for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:  # a linked folder: listed
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError as e:
            print(json.dumps({"error": str(e)}))
            continue
        n += 1
        total += st.st_size
        if n <= limit:
            print(json.dumps({"path": os.path.relpath(path, root), "size": st.st_size, "mtime": st.st_mtime,
                              "link": os.path.islink(path)}))
print(json.dumps({"files": n, "bytes": total}))
"""


def pod_name(claim: str) -> str:
    """One inspect pod per claim (a second `inspect` reuses it)."""
    return f"leoflow-inspect-{hashlib.sha256(claim.encode()).hexdigest()[:12]}"


def inspect_pod(namespace: str, claim: str, *, image: str, uid: int, ttl: dt.timedelta,
                instance: str, directory: str | None = None) -> dict[str, Any]:
    """The read-only pod on the run's ``claim`` (``directory``: the run's directory on the namespace's shared
    claim ``claim``, mounted by subPath and labelled with it, as the shared-claim policy admits)."""
    if uid <= 0:
        raise ValueError("the inspect pod runs as a non-root uid (give --uid > 0)")
    seconds = max(int(ttl.total_seconds()), 60)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(directory or claim), "namespace": namespace,
            "labels": {labels.INSPECT: "true", labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                       labels.INSTANCE: instance, labels.PVC: claim,
                       **({labels.DIRECTORY: directory} if directory else {})},
            "annotations": {labels.PVC: claim},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": seconds,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "inspect", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", str(seconds)],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}},
                "volumeMounts": [{"name": labels.VOLUME_NAME, "mountPath": MOUNT, "readOnly": True,
                                  **({"subPath": directory} if directory else {})}],
            }],
            "volumes": [{"name": labels.VOLUME_NAME,
                         "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime: float
    link: bool = False


@dataclass(frozen=True)
class Listing:
    entries: tuple[FileEntry, ...]
    files: int
    total_bytes: int
    errors: tuple[str, ...] = ()


def parse_listing(text: str) -> Listing:
    """What LISTING_SCRIPT printed; lines that are not its JSON (a shell's noise) are errors, never a crash."""
    entries: list[FileEntry] = []
    errors: list[str] = []
    files = total = -1
    for line in text.splitlines():
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise TypeError("not an object")
            if "error" in item:
                errors.append(str(item["error"])[:200])
            elif "files" in item:
                files, total = int(item["files"]), int(item["bytes"])
            else:
                entries.append(FileEntry(str(item["path"]), int(item.get("size", 0)), float(item.get("mtime", 0)),
                                         bool(item.get("link", False))))
        except (ValueError, TypeError, KeyError):
            if line.strip():
                errors.append(line.strip()[:200])
    if files < 0:
        errors.append("the listing ended before its summary line")
        files, total = len(entries), sum(e.size for e in entries)
    return Listing(tuple(entries), files, total, tuple(errors))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def render_listing(listing: Listing, *, top: int = 20) -> list[str]:
    """The largest and the newest files (at most ``top`` of each), then the totals."""
    def row(e: FileEntry) -> str:
        try:
            when = dt.datetime.fromtimestamp(e.mtime, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        except (ValueError, OverflowError, OSError):  # a time no calendar holds (a file's bogus mtime)
            when = f"{'?':<19}"
        name = json.dumps(e.path)[1:-1] + (" (symlink)" if e.link else "")
        return f"  {_size(e.size):>10}  {when}  {name}"

    out = [f"{listing.files} files, {_size(listing.total_bytes)} on {MOUNT}"]
    if listing.files > len(listing.entries):
        out[0] += f" (the first {len(listing.entries)} walked are ranked)"
    largest = sorted(listing.entries, key=lambda e: (-e.size, e.path))[:top]
    newest = sorted(listing.entries, key=lambda e: (-e.mtime, e.path))[:top]
    if largest:
        out += ["largest:", *map(row, largest), "newest:", *map(row, newest)]
    out += [f"! {e}" for e in listing.errors[:10]]
    return out
