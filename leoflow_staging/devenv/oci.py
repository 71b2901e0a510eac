"""OCI image archives without a registry: deterministic layers, content-addressed blobs, one archive file.

Used by ``hack/build-images.sh`` (run as a script, ``python3 -P oci.py <command>``), so it is stdlib
only and imports nothing from the project. An archive is what ``ctr images import`` and
``skopeo copy oci-archive:...`` read: a tar of ``oci-layout``, ``index.json`` (annotated with the image
reference), and ``blobs/sha256/<hex>`` holding the manifest, the config JSON and the layer tars.

Determinism: a layer tar lists its tree in sorted order, every entry with mtime 0, no user or group
names, owner 0:0 unless the tree's real owners are asked for (a Debian rootfs), file modes as on disk
(setuid/setgid/sticky included), symlinks kept, hard links stored as plain files, device nodes,
sockets and FIFOs left out; gzip without a name or time stamp. Same tree, same bytes, same digest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
LAYER_MTIME = 0
GZIP_LEVEL = 6
CHUNK = 1 << 20
# Folders whose contents a container runtime supplies itself; the layer keeps the empty folder.
RUNTIME_DIRS = frozenset({"dev", "proc", "sys"})
PRODUCT_SOURCES = ("pyproject.toml", "README.md", "requirements/image.lock",
                   "leoflow_staging", "webhook", "gc_job", "shared", "certs")


# ---------------------------------------------------------------------------------------------------- digests

def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of some bytes, the OCI digest form."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """Digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def canonical_json(obj: object) -> bytes:
    """The bytes a JSON blob is stored as: sorted keys, no spaces, so equal objects share a digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _source_files(root: Path, inputs: Iterable[str]) -> list[str]:
    files: list[str] = []
    for item in inputs:
        path = root / item
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                files.extend(Path(dirpath, name).relative_to(root).as_posix()
                             for name in filenames if not name.endswith((".pyc", ".pyo")))
        elif path.is_file():
            files.append(Path(item).as_posix())
        else:
            raise FileNotFoundError(f"source input {item!r} not found under {root}")
    return sorted(set(files))


def source_digest(root: Path, inputs: Iterable[str] = PRODUCT_SOURCES) -> str:
    """Hex digest over the named files and folders (all files, sorted, ``__pycache__`` left out).

    Each file contributes its path relative to ``root`` and the digest of its content, so a rename,
    an edit, an added or a removed file all change it, and nothing else (time stamps, modes) does.
    """
    h = hashlib.sha256()
    for rel in _source_files(root, inputs):
        content = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        h.update(f"{rel}\0{content}\n".encode())
    return h.hexdigest()


def project_version(pyproject: Path) -> str:
    """``[project] version`` of a pyproject.toml."""
    with pyproject.open("rb") as f:
        data = tomllib.load(f)
    return str(data["project"]["version"])


def product_tag(root: Path, inputs: Iterable[str] = PRODUCT_SOURCES) -> str:
    """``<version>-<12 hex of the source digest>``: the product image's tag."""
    return f"{project_version(root / 'pyproject.toml')}-{source_digest(root, inputs)[:12]}"


def split_ref(ref: str) -> tuple[str, str]:
    """``registry/repo:tag`` -> (``registry/repo``, ``tag``); a ref needs a tag here."""
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or not tag or "/" in tag:
        raise ValueError(f"image reference {ref!r} has no tag")
    return name, tag


# ---------------------------------------------------------------------------------------------------- layers

class _Sink(Protocol):
    def write(self, b: bytes, /) -> object: ...


class _HashingWriter(io.RawIOBase):
    """A write-only raw stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.hash.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def iter_tree(root: Path) -> Iterator[tuple[str, Path]]:
    """(name in the tar, path on disk) of everything under ``root``, parents first, names sorted by bytes.

    The contents of ``dev``, ``proc`` and ``sys`` at the top are skipped (the runtime mounts its own).
    """
    def walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            name = f"{prefix}{entry.name}"
            path = Path(entry.path)
            yield name, path
            if entry.is_dir(follow_symlinks=False) and not (prefix == "" and entry.name in RUNTIME_DIRS):
                yield from walk(path, name + "/")

    yield from walk(root, "")


def tar_info(name: str, path: Path, *, preserve_owner: bool) -> tarfile.TarInfo | None:
    """The normalised tar header of one path, or None for what a layer does not carry (devices, sockets)."""
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = LAYER_MTIME
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = (st.st_uid, st.st_gid) if preserve_owner else (0, 0)
    info.uname = info.gname = ""
    if stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    else:
        return None
    return info


def write_layer_tar(root: Path, out: IO[bytes], *, preserve_owner: bool = False) -> int:
    """Write the deterministic tar of the tree under ``root`` to ``out``; returns how many entries were skipped."""
    skipped = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, path in iter_tree(root):
            info = tar_info(name, path, preserve_owner=preserve_owner)
            if info is None:
                skipped += 1
            elif info.type == tarfile.REGTYPE:
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return skipped


@dataclass(frozen=True)
class Layer:
    """A layer blob in a blob store and what the manifest and config say of it."""

    blob: Path
    digest: str       # of the blob as stored (compressed or not)
    size: int
    diff_id: str      # of the uncompressed tar
    media_type: str
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {"blob": str(self.blob), "digest": self.digest, "size": self.size, "diff_id": self.diff_id,
                "media_type": self.media_type, "created_by": self.created_by}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layer:
        return cls(blob=Path(data["blob"]), digest=data["digest"], size=int(data["size"]), diff_id=data["diff_id"],
                   media_type=data["media_type"], created_by=data.get("created_by", ""))


def _pack(root: Path, raw: _HashingWriter, *, preserve_owner: bool) -> int:
    with io.BufferedWriter(raw, CHUNK) as buffered:  # closing flushes it into ``raw`` (not into raw's sink)
        return write_layer_tar(root, buffered, preserve_owner=preserve_owner)


def blob_path(blobs: Path, digest: str) -> Path:
    """Where a blob lives in a store laid out like an OCI layout's ``blobs/`` (``<store>/sha256/<hex>``)."""
    algorithm, _, hexdigest = digest.partition(":")
    return blobs / algorithm / hexdigest


def build_layer(root: Path, blobs: Path, *, compress: bool = True, preserve_owner: bool = False,
                created_by: str = "") -> tuple[Layer, int]:
    """Pack the tree under ``root`` as a layer blob into the store ``blobs``; returns it and the skipped count."""
    (blobs / "sha256").mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".layer-", dir=blobs / "sha256")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            stored = _HashingWriter(raw)
            if compress:
                with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=stored,
                                   mtime=0) as gz:
                    plain = _HashingWriter(gz)
                    skipped = _pack(root, plain, preserve_owner=preserve_owner)
            else:
                plain = stored
                skipped = _pack(root, plain, preserve_owner=preserve_owner)
        layer = Layer(blob=blob_path(blobs, stored.digest), digest=stored.digest, size=stored.size,
                      diff_id=plain.digest, media_type=MEDIA_LAYER_GZIP if compress else MEDIA_LAYER_TAR,
                      created_by=created_by)
        tmp.chmod(0o644)
        tmp.replace(layer.blob)
    finally:
        tmp.unlink(missing_ok=True)
    return layer, skipped


# ---------------------------------------------------------------------------------------------------- JSON documents

def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def image_config(layers: Sequence[Layer], *, entrypoint: Sequence[str] | None = None,
                 cmd: Sequence[str] | None = None, env: Sequence[str] = (), user: str | None = None,
                 workdir: str = "/", exposed_ports: Sequence[str] = (), labels: dict[str, str] | None = None,
                 architecture: str = "amd64", os_name: str = "linux") -> dict[str, Any]:
    """The image config (OCI image-spec config.md); no ``created`` time stamp, so it stays reproducible."""
    config: dict[str, Any] = {"Env": list(env), "WorkingDir": workdir}
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if user is not None:
        config["User"] = user
    if exposed_ports:
        config["ExposedPorts"] = {port: {} for port in exposed_ports}
    if labels:
        config["Labels"] = dict(labels)
    return {
        "architecture": architecture,
        "os": os_name,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": layer.created_by} for layer in layers],
    }


def image_manifest(config: bytes, layers: Sequence[Layer], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, config),
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return manifest


def image_index(manifest: bytes, ref: str, *, architecture: str = "amd64", os_name: str = "linux") -> dict[str, Any]:
    """``index.json``: one manifest, named by the full ref (containerd) and by the tag (OCI layout)."""
    _, tag = split_ref(ref)
    entry = descriptor(MEDIA_MANIFEST, manifest)
    entry["platform"] = {"architecture": architecture, "os": os_name}
    entry["annotations"] = {ANNOTATION_IMAGE_NAME: ref, ANNOTATION_REF_NAME: tag}
    return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]}


# ---------------------------------------------------------------------------------------------------- archives

def _archive_member(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, path: Path | None = None,
                    size: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = LAYER_MTIME
    info.uname = info.gname = ""
    if data is None and path is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.mode = 0o644
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        assert path is not None
        info.size = size
        with path.open("rb") as f:
            tar.addfile(info, f)


def write_archive(out: Path, ref: str, layers: Sequence[Layer], config: dict[str, Any]) -> str:
    """Write the OCI archive of one image to ``out`` (atomically); returns the manifest digest."""
    config_bytes = canonical_json(config)
    manifest_bytes = canonical_json(image_manifest(config_bytes, layers))
    index_bytes = canonical_json(image_index(manifest_bytes, ref))
    blobs: dict[str, tuple[bytes | None, Path | None, int]] = {
        sha256_digest(config_bytes): (config_bytes, None, len(config_bytes)),
        sha256_digest(manifest_bytes): (manifest_bytes, None, len(manifest_bytes)),
    }
    for layer in layers:
        blobs[layer.digest] = (None, layer.blob, layer.size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("wb") as raw, tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _archive_member(tar, "blobs")
            _archive_member(tar, "blobs/sha256")
            for digest in sorted(blobs):
                data, path, size = blobs[digest]
                _archive_member(tar, "blobs/sha256/" + digest.partition(":")[2], data=data, path=path, size=size)
            _archive_member(tar, "index.json", data=index_bytes)
            _archive_member(tar, "oci-layout", data=OCI_LAYOUT)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_digest(manifest_bytes)


@dataclass(frozen=True)
class ArchiveSummary:
    ref: str
    manifest_digest: str
    config: dict[str, Any]
    layer_sizes: tuple[int, ...]


def _read_member(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    if name not in members:
        raise ValueError(f"archive lacks {name}")
    f = tar.extractfile(members[name])
    if f is None:
        raise ValueError(f"{name} is not a file")
    return f.read()


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise ValueError(f"unsupported digest {digest!r}")
    return f"blobs/sha256/{hexdigest}"


def verify_archive(path: Path) -> ArchiveSummary:
    """Check an archive end to end: layout, index -> manifest -> config -> layers, every digest, size and diff_id."""
    with tarfile.open(path, mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        if json.loads(_read_member(tar, members, "oci-layout")).get("imageLayoutVersion") != "1.0.0":
            raise ValueError("oci-layout is not version 1.0.0")

        def blob(desc: dict[str, Any]) -> bytes:
            data = _read_member(tar, members, _blob_name(desc["digest"]))
            if sha256_digest(data) != desc["digest"] or len(data) != desc["size"]:
                raise ValueError(f"blob {desc['digest']} does not match its descriptor")
            return data

        index = json.loads(_read_member(tar, members, "index.json"))
        if len(index.get("manifests", [])) != 1:
            raise ValueError("index.json must name exactly one manifest")
        entry = index["manifests"][0]
        ref = entry.get("annotations", {}).get(ANNOTATION_IMAGE_NAME, "")
        if split_ref(ref)[1] != entry["annotations"].get(ANNOTATION_REF_NAME):
            raise ValueError("index.json's ref name is not the tag of its image name")
        manifest = json.loads(blob(entry))
        config = json.loads(blob(manifest["config"]))
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise ValueError("config and manifest disagree on the number of layers")
        for desc, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            data = blob(desc)
            plain = gzip.decompress(data) if desc["mediaType"] == MEDIA_LAYER_GZIP else data
            if sha256_digest(plain) != diff_id:
                raise ValueError(f"layer {desc['digest']} does not match its diff_id {diff_id}")
    return ArchiveSummary(ref=ref, manifest_digest=entry["digest"], config=config,
                          layer_sizes=tuple(d["size"] for d in manifest["layers"]))


# ---------------------------------------------------------------------------------------------------- launchers

def console_scripts(site_packages: Path) -> dict[str, str]:
    """``name -> module:attr`` of every ``[console_scripts]`` entry point of the distributions installed there."""
    scripts: dict[str, str] = {}
    for entry_points in sorted(site_packages.glob("*.dist-info/entry_points.txt")):
        section = ""
        for raw in entry_points.read_text().splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section == "console_scripts" and "=" in line and not line.startswith(("#", ";")):
                name, _, value = line.partition("=")
                scripts[name.strip()] = value.split("[", 1)[0].strip()
    return scripts


def launcher(entry_point: str, python: str = "/usr/bin/python3") -> str:
    """A console-script launcher for ``module:attr.path`` (what pip writes, without host paths)."""
    module, _, attr = entry_point.partition(":")
    if not module or not attr:
        raise ValueError(f"entry point {entry_point!r} is not module:attr")
    head = attr.split(".", 1)[0]
    return (f"#!{python}\nimport sys\n\nfrom {module} import {head}\n\n"
            f'if __name__ == "__main__":\n    sys.exit({attr}())\n')


def write_launchers(site_packages: Path, bin_dir: Path, python: str = "/usr/bin/python3",
                    only: Sequence[str] = ()) -> list[str]:
    """Write a launcher per console script (or only the named ones) into ``bin_dir``; returns their names."""
    scripts = console_scripts(site_packages)
    names = [n for n in sorted(scripts) if not only or n in only]
    missing = sorted(set(only) - set(scripts))
    if missing:
        raise ValueError(f"no console script named {', '.join(missing)} under {site_packages}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = bin_dir / name
        target.write_text(launcher(scripts[name], python))
        target.chmod(0o755)
    return names


# ---------------------------------------------------------------------------------------------------- CLI

def _cmd_layer(args: argparse.Namespace) -> int:
    layer, skipped = build_layer(args.root, args.blobs, compress=not args.no_gzip,
                                 preserve_owner=args.preserve_owner, created_by=args.created_by)
    if skipped:
        print(f"oci: left {skipped} device node(s)/socket(s)/FIFO(s) out of the layer of {args.root}", file=sys.stderr)
    text = json.dumps(layer.to_json(), indent=2) + "\n"
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_image(args: argparse.Namespace) -> int:
    layers = [Layer.from_json(json.loads(Path(p).read_text())) for p in args.layer]
    spec = json.loads(args.config)
    config = image_config(layers, entrypoint=spec.get("Entrypoint"), cmd=spec.get("Cmd"), env=spec.get("Env", []),
                          user=spec.get("User"), workdir=spec.get("WorkingDir", "/"),
                          exposed_ports=spec.get("ExposedPorts", []), labels=spec.get("Labels"))
    digest = write_archive(args.out, args.ref, layers, config)
    summary = verify_archive(args.out)
    if summary.manifest_digest != digest or summary.ref != args.ref:
        raise SystemExit(f"oci: {args.out} does not read back as written")
    print(digest)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    summary = verify_archive(args.archive)
    print(json.dumps({"ref": summary.ref, "manifest": summary.manifest_digest, "layers": list(summary.layer_sizes),
                      "config": summary.config["config"]}, indent=2))
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    print(product_tag(args.root))
    return 0


def _cmd_launchers(args: argparse.Namespace) -> int:
    for name in write_launchers(args.site, args.bin, python=args.python, only=args.only or ()):
        print(name)
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    if len(args.items) % 3:
        raise SystemExit("oci: summary takes name archive ref triples")
    items = args.items
    out = {items[i]: {"archive": str(Path(items[i + 1]).resolve()), "ref": items[i + 2]}
           for i in range(0, len(items), 3)}
    print(json.dumps(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oci.py", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("layer", help="pack a folder as a deterministic layer blob; prints its descriptor JSON")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--blobs", type=Path, required=True, help="blob store (gets sha256/<hex>)")
    p.add_argument("--no-gzip", action="store_true")
    p.add_argument("--preserve-owner", action="store_true", help="keep the tree's uid/gid (default 0:0)")
    p.add_argument("--created-by", default="")
    p.add_argument("--out", type=Path, help="write the descriptor JSON here instead of stdout")
    p.set_defaults(func=_cmd_layer)
    p = sub.add_parser("image", help="write an OCI archive from layer descriptors and a config; prints the digest")
    p.add_argument("--ref", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layer", action="append", default=[], help="a descriptor JSON file from `layer`, bottom first")
    p.add_argument("--config", required=True, help="JSON: Entrypoint, Cmd, Env, User, WorkingDir, ExposedPorts, Labels")
    p.set_defaults(func=_cmd_image)
    p = sub.add_parser("verify", help="check an archive's structure and every digest")
    p.add_argument("archive", type=Path)
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("tag", help="the product image tag of a source tree")
    p.add_argument("--root", type=Path, required=True)
    p.set_defaults(func=_cmd_tag)
    p = sub.add_parser("launchers", help="write console-script launchers for an installed site-packages")
    p.add_argument("--site", type=Path, required=True)
    p.add_argument("--bin", type=Path, required=True)
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--only", action="append")
    p.set_defaults(func=_cmd_launchers)
    p = sub.add_parser("summary", help="print the build's JSON from name archive ref triples")
    p.add_argument("items", nargs="*")
    p.set_defaults(func=_cmd_summary)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
