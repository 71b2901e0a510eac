"""Locating the control-plane binaries (building them through the repo's script when allowed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from leoflow_staging.devenv.controlplane import BINARIES

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-control-plane.sh"


def ensure_assets() -> Path:
    """The folder holding etcd, kube-apiserver, kube-controller-manager and helm.

    Runs ``hack/build-control-plane.sh``, which answers from its cache (or from
    ``KUBEBUILDER_ASSETS``) without building when it can.
    """
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False,
                         env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"building the control plane failed:\n{out.stderr[-4000:]}")
    assets = Path(out.stdout.strip().splitlines()[-1])
    missing = [b for b in (*BINARIES, "helm") if not os.access(assets / b, os.X_OK)]
    if missing:
        raise FileNotFoundError(f"{assets} lacks {', '.join(missing)}")
    return assets
