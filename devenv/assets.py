"""Locating the control-plane binaries (building them through the repo's script when allowed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devenv.controlplane import BINARIES

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "hack" / "build-control-plane.sh"


NODE_BINARIES = ("kube-scheduler", "kubelet", "kube-proxy")


def ensure_assets(*, node: bool = False) -> Path:
    """The folder holding etcd, kube-apiserver, kube-controller-manager and helm (and with ``node``,
    kube-scheduler, kubelet and kube-proxy).

    Runs ``hack/build-control-plane.sh``, which answers from its cache (or from
    ``KUBEBUILDER_ASSETS``) without building when it can.
    """
    # Progress (and how long each build takes) goes straight to stderr: a cold build takes minutes.
    out = subprocess.run(["bash", str(BUILD_SCRIPT), *(["--node"] if node else [])], stdout=subprocess.PIPE,
                         text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError("building the control plane failed (its messages are above)")
    assets = Path(out.stdout.strip().splitlines()[-1])
    wanted = (*BINARIES, "helm", *(NODE_BINARIES if node else ()))
    missing = [b for b in wanted if not os.access(assets / b, os.X_OK)]
    if missing:
        raise FileNotFoundError(f"{assets} lacks {', '.join(missing)}")
    return assets
