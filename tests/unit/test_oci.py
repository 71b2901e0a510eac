"""The pure parts of the OCI archive writer (leoflow_staging/devenv/oci.py): digests, deterministic layers,
index/manifest/config structure, the product tag, console-script launchers."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leoflow_staging.devenv import oci


def _tree(root: Path) -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "usr" / "bin" / "tool").chmod(0o755)
    (root / "usr" / "bin" / "alias").symlink_to("tool")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "passwd").chmod(0o644)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "dev").mkdir()
    (root / "dev" / "stale").write_text("left out: the runtime mounts /dev")
    return root


def _members(blob: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(blob, mode="r:*") as tar:
        return tar.getmembers()


def test_sha256_digest_is_the_oci_form() -> None:
    assert oci.sha256_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_file_digest_matches_bytes_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * oci.CHUNK + 17)
    (tmp_path / "f").write_bytes(data)
    assert oci.file_digest(tmp_path / "f") == (oci.sha256_digest(data), len(data))


def test_canonical_json_ignores_key_order() -> None:
    expected = b'{"a":[1,2],"b":1}'
    assert oci.canonical_json({"b": 1, "a": [1, 2]}) == oci.canonical_json({"a": [1, 2], "b": 1}) == expected


def test_layer_tar_is_sorted_normalised_and_keeps_modes_and_symlinks(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    layer, skipped = oci.build_layer(root, tmp_path / "blobs", created_by="test")
    assert skipped == 0
    members = _members(layer.blob)
    names = [m.name for m in members]
    assert names == ["dev", "etc", "etc/passwd", "tmp", "usr", "usr/bin", "usr/bin/alias", "usr/bin/tool"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["tmp"].mode == 0o1777 and by_name["tmp"].isdir()
    assert by_name["usr/bin/tool"].mode == 0o755
    assert by_name["etc/passwd"].mode == 0o644
    assert by_name["usr/bin/alias"].issym() and by_name["usr/bin/alias"].linkname == "tool"


def test_layer_digests_describe_the_blob_and_the_uncompressed_tar(tmp_path: Path) -> None:
    layer, _ = oci.build_layer(_tree(tmp_path / "root"), tmp_path / "blobs")
    blob = layer.blob.read_bytes()
    assert layer.blob == tmp_path / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")
    assert (layer.digest, layer.size) == (oci.sha256_digest(blob), len(blob))
    assert layer.diff_id == oci.sha256_digest(gzip.decompress(blob))
    assert layer.media_type == oci.MEDIA_LAYER_GZIP
    assert blob[4:8] == b"\0\0\0\0"  # gzip header without a time stamp


def test_uncompressed_layer(tmp_path: Path) -> None:
    layer, _ = oci.build_layer(_tree(tmp_path / "root"), tmp_path / "blobs", compress=False)
    assert layer.digest == layer.diff_id and layer.media_type == oci.MEDIA_LAYER_TAR


def test_same_tree_same_digest_whatever_the_times_and_creation_order(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = tmp_path / "b"
    (b / "tmp").mkdir(parents=True)
    (b / "tmp").chmod(0o1777)
    (b / "etc").mkdir()
    (b / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (b / "etc" / "passwd").chmod(0o644)
    (b / "dev").mkdir()
    (b / "usr" / "bin").mkdir(parents=True)
    (b / "usr" / "bin" / "alias").symlink_to("tool")
    (b / "usr" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (b / "usr" / "bin" / "tool").chmod(0o755)
    os.utime(b / "etc" / "passwd", (12345, 12345))
    la, _ = oci.build_layer(a, tmp_path / "blobs-a")
    lb, _ = oci.build_layer(b, tmp_path / "blobs-b")
    assert (la.digest, la.diff_id) == (lb.digest, lb.diff_id)


def test_a_content_or_mode_change_changes_the_digest(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    first, _ = oci.build_layer(root, tmp_path / "blobs")
    (root / "etc" / "passwd").chmod(0o600)
    second, _ = oci.build_layer(root, tmp_path / "blobs")
    (root / "etc" / "passwd").write_text("changed\n")
    third, _ = oci.build_layer(root, tmp_path / "blobs")
    assert len({first.diff_id, second.diff_id, third.diff_id}) == 3


def test_preserve_owner_keeps_ids_but_never_names(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    layer, _ = oci.build_layer(root, tmp_path / "blobs", preserve_owner=True)
    st_uid = (root / "etc" / "passwd").stat().st_uid
    passwd = next(m for m in _members(layer.blob) if m.name == "etc/passwd")
    assert passwd.uid == st_uid and passwd.uname == ""


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcxyz._-", min_size=1, max_size=8).filter(lambda s: s not in {".", ".."}),
                       st.binary(max_size=64), min_size=1, max_size=6))
def test_layer_is_a_function_of_the_tree(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> None:
    base = tmp_path_factory.mktemp("tree")
    digests: set[str] = set()
    for order in (sorted(files), sorted(files, reverse=True)):
        root = base / f"root-{len(digests)}-{order[0]}"
        root.mkdir()
        for name in order:  # written in a different order each time
            (root / name).write_bytes(files[name])
            (root / name).chmod(0o644)
        layer, _ = oci.build_layer(root, base / "blobs")
        assert [m.name for m in _members(layer.blob)] == sorted(files, key=os.fsencode)
        digests.add(layer.diff_id)
    assert len(digests) == 1


def test_split_ref() -> None:
    assert oci.split_ref("leoflow.local/leoflow-staging:0.1.0-abc") == ("leoflow.local/leoflow-staging", "0.1.0-abc")
    assert oci.split_ref("localhost:5000/pause:3.10") == ("localhost:5000/pause", "3.10")
    with pytest.raises(ValueError):
        oci.split_ref("localhost:5000/pause")
    with pytest.raises(ValueError):
        oci.split_ref("pause")


def _layer(tmp_path: Path) -> oci.Layer:
    return oci.build_layer(_tree(tmp_path / "root"), tmp_path / "blobs", created_by="a layer")[0]


def test_config_manifest_and_index_structure(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    config = oci.image_config([layer], entrypoint=["leoflow-staging"], cmd=["--help"], env=["A=1"],
                              user="10001:10001", exposed_ports=["8443/tcp"], labels={"k": "v"})
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id]}
    assert config["config"] == {"Entrypoint": ["leoflow-staging"], "Cmd": ["--help"], "Env": ["A=1"],
                                "User": "10001:10001", "WorkingDir": "/", "ExposedPorts": {"8443/tcp": {}},
                                "Labels": {"k": "v"}}
    assert config["history"] == [{"created_by": "a layer"}]
    assert "created" not in config  # no time stamp: reproducible
    config_bytes = oci.canonical_json(config)
    manifest = oci.image_manifest(config_bytes, [layer])
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == oci.MEDIA_MANIFEST
    assert manifest["config"] == {"mediaType": oci.MEDIA_CONFIG, "digest": oci.sha256_digest(config_bytes),
                                  "size": len(config_bytes)}
    assert manifest["layers"] == [{"mediaType": oci.MEDIA_LAYER_GZIP, "digest": layer.digest, "size": layer.size}]
    manifest_bytes = oci.canonical_json(manifest)
    index = oci.image_index(manifest_bytes, "leoflow.local/pause:3.10")
    (entry,) = index["manifests"]
    assert index["mediaType"] == oci.MEDIA_INDEX
    assert entry["digest"] == oci.sha256_digest(manifest_bytes) and entry["size"] == len(manifest_bytes)
    assert entry["annotations"] == {"io.containerd.image.name": "leoflow.local/pause:3.10",
                                    "org.opencontainers.image.ref.name": "3.10"}
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}


def test_no_entrypoint_means_no_key() -> None:
    assert "Entrypoint" not in oci.image_config([], cmd=["sh"])["config"]


def test_archive_layout_reads_back_and_is_reproducible(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    config = oci.image_config([layer], cmd=["sh"])
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    digest = oci.write_archive(a, "leoflow.local/task:busybox", [layer], config)
    assert oci.write_archive(b, "leoflow.local/task:busybox", [layer], config) == digest
    assert a.read_bytes() == b.read_bytes()
    assert not (tmp_path / "a.tar.tmp").exists()
    with tarfile.open(a) as tar:
        names = tar.getnames()
        assert json.loads(tar.extractfile("oci-layout").read()) == {"imageLayoutVersion": "1.0.0"}
    blob_names = {f"blobs/sha256/{d.removeprefix('sha256:')}" for d in (digest, layer.digest)}
    assert blob_names <= set(names) and {"index.json", "oci-layout"} <= set(names)
    summary = oci.verify_archive(a)
    assert (summary.ref, summary.manifest_digest, summary.layer_sizes) == ("leoflow.local/task:busybox", digest,
                                                                            (layer.size,))


def test_verify_catches_a_corrupt_blob(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    data = bytearray(layer.blob.read_bytes())
    data[-9] ^= 0xFF  # inside the gzip trailer's CRC: same size, different digest
    layer.blob.write_bytes(bytes(data))
    out = tmp_path / "bad.tar"
    oci.write_archive(out, "leoflow.local/task:busybox", [layer], oci.image_config([layer]))
    with pytest.raises(ValueError, match="does not match"):
        oci.verify_archive(out)


def test_source_digest_follows_content_and_names_not_times(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.3"\n')
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("A = 1\n")
    inputs = ("pyproject.toml", "pkg")
    first = oci.source_digest(tmp_path, inputs)
    (pkg / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"junk")
    os.utime(pkg / "__init__.py", (1, 1))
    assert oci.source_digest(tmp_path, inputs) == first
    (pkg / "__init__.py").write_text("A = 2\n")
    assert oci.source_digest(tmp_path, inputs) != first
    (pkg / "__init__.py").write_text("A = 1\n")
    (pkg / "new.py").write_text("")
    assert oci.source_digest(tmp_path, inputs) != first
    expected = hashlib.sha256()
    for rel in ("pkg/__init__.py", "pkg/new.py", "pyproject.toml"):
        expected.update(f"{rel}\0{hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()}\n".encode())
    assert oci.source_digest(tmp_path, inputs) == expected.hexdigest()
    assert oci.product_tag(tmp_path, inputs) == "1.2.3-" + expected.hexdigest()[:12]
    with pytest.raises(FileNotFoundError):
        oci.source_digest(tmp_path, ("missing",))


def test_product_tag_of_this_repo_has_the_version() -> None:
    root = Path(__file__).resolve().parents[2]
    version = oci.project_version(root / "pyproject.toml")
    tag = oci.product_tag(root)
    assert tag.startswith(version + "-") and len(tag) == len(version) + 13


def test_console_scripts_and_launchers(tmp_path: Path) -> None:
    info = tmp_path / "site" / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(
        "[console_scripts]\ndemo = demo.cli:main\nextra = demo.cli:App.run [fancy]\n\n[other]\nx = y:z\n")
    assert oci.console_scripts(tmp_path / "site") == {"demo": "demo.cli:main", "extra": "demo.cli:App.run"}
    text = oci.launcher("demo.cli:App.run")
    assert text.startswith("#!/usr/bin/python3\n") and "from demo.cli import App" in text and "App.run()" in text
    compile(text, "launcher", "exec")
    assert oci.write_launchers(tmp_path / "site", tmp_path / "bin", only=["demo"]) == ["demo"]
    assert (tmp_path / "bin" / "demo").stat().st_mode & 0o777 == 0o755
    with pytest.raises(ValueError):
        oci.write_launchers(tmp_path / "site", tmp_path / "bin", only=["absent"])
    with pytest.raises(ValueError):
        oci.launcher("no_attr")


def test_cli_summary_prints_one_json_object(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert oci.main(["summary", "pause", str(tmp_path / "p.tar"), "leoflow.local/pause:3.10"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "pause": {"archive": str((tmp_path / "p.tar").resolve()), "ref": "leoflow.local/pause:3.10"}}


def test_cli_layer_and_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "root")
    assert oci.main(["layer", "--root", str(root), "--blobs", str(tmp_path / "blobs"), "--out",
                     str(tmp_path / "layer.json")]) == 0
    out = tmp_path / "img.tar"
    assert oci.main(["image", "--ref", "leoflow.local/x:1", "--out", str(out), "--layer", str(tmp_path / "layer.json"),
                     "--config", '{"Cmd": ["sh"], "User": "65535:65535"}']) == 0
    digest = capsys.readouterr().out.strip()
    summary = oci.verify_archive(out)
    assert summary.manifest_digest == digest and summary.config["config"]["User"] == "65535:65535"


def test_gzip_stream_is_the_standard_format(tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    with gzip.open(layer.blob) as f, tarfile.open(fileobj=io.BytesIO(f.read())) as tar:
        assert "usr/bin/tool" in tar.getnames()
