"""The OCI image archives the node runs: built with buildah from their recipes by ``hack/build-images.sh``
(the product from the ``Dockerfile``, as ``make image`` does), cached, no registry (docs/images.md)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from devenv.assets import REPO

BUILD_SCRIPT = REPO / "hack" / "build-images.sh"
ENSURE_SCRIPT = REPO / "hack" / "ensure-buildah.sh"
ALL = ("pause", "task", "provisioner", "product")


@dataclass(frozen=True)
class Image:
    name: str
    archive: Path
    ref: str  # repo:tag as the node knows it once imported
    id: str = ""  # sha256:<image ID>, the digest of the image's config: a pod's imageID once imported
    digest: str = ""  # sha256:<manifest digest>, what a registry names the image by


def archive_digests(archive: Path) -> tuple[str, str]:
    """(image ID, manifest digest) of the one image in an OCI archive, read from the archive itself."""
    with tarfile.open(archive) as tar:
        def blob(name: str) -> dict[str, object]:
            member = tar.extractfile(name)
            if member is None:
                raise ValueError(f"{archive} lacks {name}")
            data: dict[str, object] = json.loads(member.read())
            return data
        manifests = blob("index.json")["manifests"]
        if not isinstance(manifests, list) or len(manifests) != 1:
            raise ValueError(f"{archive} must hold exactly one manifest")
        digest = str(manifests[0]["digest"])
        config = blob(f"blobs/sha256/{digest.removeprefix('sha256:')}")["config"]
        assert isinstance(config, dict)
        return str(config["digest"]), digest


def build_images(names: tuple[str, ...] = ALL) -> dict[str, Image]:
    """Build (or find in the cache) the named images; progress goes to this process's stderr."""
    env = os.environ.copy()
    ensure = subprocess.run(["bash", str(ENSURE_SCRIPT)], check=False, env=env)
    if ensure.returncode != 0:
        raise RuntimeError("buildah is not installed and could not be (see the messages above)")
    out = subprocess.run(["bash", str(BUILD_SCRIPT), *names], stdout=subprocess.PIPE, text=True, check=False,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"building the images {', '.join(names)} failed (see the messages above)")
    data = json.loads(out.stdout)
    return {name: Image(name=name, archive=Path(item["archive"]), ref=item["ref"], id=item["id"],
                        digest=item["digest"])
            for name, item in data.items()}
