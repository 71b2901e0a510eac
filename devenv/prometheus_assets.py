"""Locating promtool, prometheus and the prometheus-operator CRDs (built by hack/build-prometheus.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "hack" / "build-prometheus.sh"


def ensure_prometheus(*parts: str) -> Path:
    """The folder holding the requested parts (``promtool``, ``prometheus``, ``crds``); the script
    answers from its cache without building when it can."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT), *parts], stdout=subprocess.PIPE, text=True, check=False,
                         env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"hack/build-prometheus.sh {' '.join(parts)} failed (its messages are above)")
    folder = Path(out.stdout.strip().splitlines()[-1])
    for part in parts or ("promtool", "prometheus", "crds"):
        if not (folder / part).exists():
            raise FileNotFoundError(f"{folder} lacks {part}")
    return folder
