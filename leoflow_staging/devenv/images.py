"""The OCI image archives the node runs (built by ``hack/build-images.sh``, cached, no registry)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from leoflow_staging.devenv.assets import REPO

BUILD_SCRIPT = REPO / "hack" / "build-images.sh"
ALL = ("pause", "task", "provisioner", "product")


@dataclass(frozen=True)
class Image:
    name: str
    archive: Path
    ref: str  # repo:tag as the node knows it once imported


def build_images(names: tuple[str, ...] = ALL) -> dict[str, Image]:
    """Build (or find in the cache) the named images; progress goes to this process's stderr."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT), *names], stdout=subprocess.PIPE, text=True, check=False,
                         env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"building the images {', '.join(names)} failed (see the messages above)")
    data = json.loads(out.stdout)
    return {name: Image(name=name, archive=Path(item["archive"]), ref=item["ref"]) for name, item in data.items()}
