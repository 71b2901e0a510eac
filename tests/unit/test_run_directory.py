"""A run's directory on a shared claim: prepare, cleanup and the `directory` CLI, on real temporary directories."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leoflow_staging.cli import EXIT_FAILED, EXIT_REFUSED, RESULT_MAX, main
from shared import run_directory
from shared.run_directory import MARKER, TRASH, CleanupResult, DirectoryError, DirectoryFailed, cleanup, prepare

NAME = "leoflow-staging-etl-run1-abcdefghijklmnopqrstuvwxyz"
DAG, RUN = "etl", "manual__2026-05-23T10:00:00+00:00"


def snapshot(top: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry under ``top`` (never through a link): kind, permission bits, and content or link target."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(parent, name)
            st_ = os.lstat(path)
            key = os.path.relpath(path, top)
            if stat.S_ISLNK(st_.st_mode):
                found[key] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                found[key] = ("dir", stat.S_IMODE(st_.st_mode), b"")
            elif stat.S_ISREG(st_.st_mode):
                found[key] = ("file", stat.S_IMODE(st_.st_mode), Path(path).read_bytes())
            else:  # a FIFO: never opened
                found[key] = ("special", stat.S_IMODE(st_.st_mode), b"")
    return found


def usage(top: Path) -> tuple[int, int]:
    """Bytes (st_blocks * 512 over distinct inodes, ``top`` included) and non-directory entries, by os.walk."""
    inodes: dict[tuple[int, int], int] = {}
    files = 0
    st_ = os.lstat(top)
    inodes[(st_.st_dev, st_.st_ino)] = st_.st_blocks * 512
    for parent, dirs, names in os.walk(top):  # followlinks=False: a link to a folder is listed, not entered
        for name in dirs + names:
            st_ = os.lstat(os.path.join(parent, name))
            files += not stat.S_ISDIR(st_.st_mode)
            inodes[(st_.st_dev, st_.st_ino)] = st_.st_blocks * 512
    return sum(inodes.values()), files


def make_run(root: Path, name: str = NAME, dag: str = DAG, run: str = RUN) -> Path:
    path = root / name
    path.mkdir(mode=0o755)
    prepare(path, dag_id=dag, run_id=run, directory=name)
    (path / "data").mkdir()
    (path / "data" / "part-0.csv").write_bytes(b"x" * 10_000)
    (path / "out.txt").write_text("hello")
    return path


# --- prepare ---------------------------------------------------------------------------------------------------


def test_prepare_writes_the_marker_and_opens_the_directory(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.mkdir(mode=0o755)
    detail = prepare(path, dag_id=DAG, run_id=RUN, directory=NAME)
    assert "\n" not in detail
    assert "marked" in detail and "0755 -> 1777" in detail
    assert os.listdir(path) == [MARKER]  # no temporary file left
    marker = path / MARKER
    content = json.loads(marker.read_text("utf-8"))
    assert re.fullmatch(r"[0-9a-f]{16}", content.pop("generation"))  # a new directory of the run: a new one
    assert content == {"dag_id": DAG, "run_id": RUN, "directory": NAME}
    assert stat.S_IMODE(marker.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777


def test_prepare_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.mkdir(mode=0o755)
    prepare(path, dag_id=DAG, run_id=RUN, directory=NAME)
    before = (path / MARKER).stat()
    detail = prepare(path, dag_id=DAG, run_id=RUN, directory=NAME)
    assert "already marked" in detail
    after = (path / MARKER).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777
    assert os.listdir(path) == [MARKER]


def test_prepare_writes_unicode_ids_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.mkdir()
    prepare(path, dag_id="étl_日本", run_id="run 🚀", directory=NAME)
    raw = (path / MARKER).read_bytes()
    assert "étl_日本".encode() in raw and b"\\u" not in raw
    assert "already" in prepare(path, dag_id="étl_日本", run_id="run 🚀", directory=NAME)


def test_prepare_refuses_another_runs_directory(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.mkdir(mode=0o755)
    (path / MARKER).write_text(json.dumps({"dag_id": "other", "run_id": "r9", "directory": NAME}))
    with pytest.raises(DirectoryError, match=r"belongs to dag 'other' run 'r9', not to dag 'etl' run"):
        prepare(path, dag_id=DAG, run_id=RUN, directory=NAME)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not opened
    assert json.loads((path / MARKER).read_text())["dag_id"] == "other"


def test_prepare_refuses_a_linked_or_foreign_marker(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.mkdir()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"dag_id": DAG, "run_id": RUN}))
    (path / MARKER).symlink_to(outside)
    with pytest.raises(DirectoryError, match="symbolic link"):
        prepare(path, dag_id=DAG, run_id=RUN, directory=NAME)
    (path / MARKER).unlink()
    (path / MARKER).write_text("not json")
    with pytest.raises(DirectoryError, match="is no marker"):
        prepare(path, dag_id=DAG, run_id=RUN, directory=NAME)


def test_prepare_refuses_bad_names_and_ids(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.mkdir()
    with pytest.raises(DirectoryError, match="no run directory name"):
        prepare(path, dag_id=DAG, run_id=RUN, directory="../x")
    with pytest.raises(DirectoryError, match="dag_id '' is empty"):
        prepare(path, dag_id="", run_id=RUN, directory=NAME)
    assert os.listdir(path) == []


# --- cleanup ---------------------------------------------------------------------------------------------------


def test_cleanup_removes_exactly_the_runs_directory(tmp_path: Path) -> None:
    target = make_run(tmp_path)
    neighbour = make_run(tmp_path, "leoflow-staging-etl-run2-zzzz", run="run2")
    expected = usage(target)
    kept = snapshot(neighbour)
    result = cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN)
    assert result == CleanupResult("removed", expected[0], expected[1], resumed=False)
    assert result.files == 3 and result.bytes >= 10_000  # the marker, data/part-0.csv and out.txt
    assert sorted(os.listdir(tmp_path)) == sorted([TRASH, neighbour.name])
    assert os.listdir(tmp_path / TRASH) == []  # neither the directory nor its .size file stays
    assert stat.S_IMODE((tmp_path / TRASH).stat().st_mode) == 0o700
    assert snapshot(neighbour) == kept


def test_cleanup_of_a_missing_directory_is_absent(tmp_path: Path) -> None:
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("absent", 0, 0, False)


def test_a_missing_volume_fails_the_attempt_and_removes_nothing(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFailed, match="No such file"):
        cleanup(tmp_path / "not-mounted", directory=NAME, dag_id=DAG, run_id=RUN)


def test_links_inside_are_removed_as_links(tmp_path: Path) -> None:
    root, outside = tmp_path / "volume", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (outside / "folder").mkdir()
    (outside / "folder" / "inner.txt").write_text("also precious")
    target = make_run(root)
    (target / "to-file").symlink_to(outside / "keep.txt")
    (target / "to-folder").symlink_to(outside / "folder")
    (target / "data" / "to-root").symlink_to("/")
    os.link(outside / "keep.txt", target / "hard")
    kept = snapshot(outside)
    result = cleanup(root, directory=NAME, dag_id=DAG, run_id=RUN)
    assert result.status == "removed" and result.files == 7
    assert not (root / NAME).exists()
    assert snapshot(outside) == kept


@pytest.mark.parametrize("marker", ["missing", "other run", "other dag", "link", "folder", "fifo", "junk", "huge"])
def test_cleanup_refuses_a_directory_it_cannot_prove_is_the_runs(tmp_path: Path, marker: str) -> None:
    target = make_run(tmp_path)
    path = target / MARKER
    if marker == "missing":
        path.unlink()
    elif marker in {"other run", "other dag"}:
        ids = {"dag_id": DAG, "run_id": "run2"} if marker == "other run" else {"dag_id": "etl2", "run_id": RUN}
        path.write_text(json.dumps(ids))
    elif marker == "link":
        real = tmp_path / "real-marker"
        shutil.move(path, real)
        path.symlink_to(real)
    elif marker == "folder":
        path.unlink()
        path.mkdir()
    elif marker == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif marker == "junk":
        path.write_bytes(b"\xff\xfe")
    else:
        path.write_text(json.dumps({"dag_id": DAG, "run_id": RUN, "pad": "x" * 100_000}))
    before = snapshot(tmp_path)
    with pytest.raises(DirectoryError, match=r"left as it is") as refused:
        cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN)
    assert str(target) in str(refused.value)
    if marker == "other run":
        assert "belongs to dag 'etl' run 'run2'" in str(refused.value)
    assert snapshot(tmp_path) == before


def test_cleanup_refuses_a_directory_that_is_a_link(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "volume", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / NAME).symlink_to(make_run(elsewhere))
    before = snapshot(tmp_path)
    with pytest.raises(DirectoryError, match="is a symbolic link, not a run's directory"):
        cleanup(root, directory=NAME, dag_id=DAG, run_id=RUN)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "A", "/", "-a", "a-", "x" * 64, "abc\n", TRASH,
                                  f"../{NAME}", "a.b"])
def test_cleanup_refuses_bad_names(tmp_path: Path, name: str) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    make_run(root)
    before = snapshot(tmp_path)
    with pytest.raises(DirectoryError, match="no run directory name"):
        cleanup(root, directory=name, dag_id=DAG, run_id=RUN)
    assert snapshot(tmp_path) == before


def test_a_killed_cleanup_is_finished_with_the_original_figures(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = make_run(tmp_path)
    for i in range(20):
        (target / "data" / f"more-{i}").write_bytes(b"y" * 5000)
    expected = usage(target)
    real_rmtree = shutil.rmtree

    def killed(path: Any, *args: Any, **kwargs: Any) -> None:
        real_rmtree(Path(path) / "data")  # half of it is gone...
        raise KeyboardInterrupt  # ... when SIGKILL arrives

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN)
    monkeypatch.undo()
    assert not target.exists()  # the name is free at once: a re-run gets a fresh directory
    assert (tmp_path / TRASH / NAME).is_dir()
    assert json.loads((tmp_path / TRASH / f"{NAME}.size").read_text()) == {"bytes": expected[0],
                                                                             "files": expected[1]}
    result = cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN)
    assert result == CleanupResult("removed", expected[0], expected[1], resumed=True)
    assert os.listdir(tmp_path / TRASH) == []
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN).status == "absent"


def test_a_cleanup_killed_before_it_reported_reports_on_retry(tmp_path: Path) -> None:
    (tmp_path / TRASH).mkdir()
    (tmp_path / TRASH / f"{NAME}.size").write_text('{"bytes": 8192, "files": 2}')
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("removed", 8192, 2, True)
    assert os.listdir(tmp_path / TRASH) == []


def test_resume_without_figures_reports_zero(tmp_path: Path) -> None:
    (tmp_path / TRASH / NAME / "left").mkdir(parents=True)
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("removed", 0, 0, True)
    assert os.listdir(tmp_path / TRASH) == []


def test_an_earlier_generation_in_the_trash_is_removed_first(tmp_path: Path) -> None:
    (tmp_path / TRASH / NAME / "old").mkdir(parents=True)
    (tmp_path / TRASH / f"{NAME}.size").write_text('{"bytes": 1, "files": 1}')
    target = make_run(tmp_path)
    expected = usage(target)
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("removed", *expected, False)
    assert os.listdir(tmp_path) == [TRASH]
    assert os.listdir(tmp_path / TRASH) == []


def test_a_full_volume_does_not_stop_the_removal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = make_run(tmp_path)
    expected = usage(target)

    def full(path: Path, content: Any, *, mode: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(run_directory, "_write_json", full)
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("removed", *expected, False)
    assert os.listdir(tmp_path) == [TRASH]


def test_a_system_error_fails_the_attempt_and_a_retry_finishes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = make_run(tmp_path)
    expected = usage(target)

    def refused(src: Any, dst: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src))

    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(DirectoryFailed, match=re.escape(f"{target}: Permission denied")):
        cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN)
    monkeypatch.undo()
    assert (target / MARKER).is_file()
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("removed", *expected, False)


def test_a_linked_trash_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "volume", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    make_run(root)
    (root / TRASH).symlink_to(elsewhere)
    with pytest.raises(DirectoryError, match="not the trash directory"):
        cleanup(root, directory=NAME, dag_id=DAG, run_id=RUN)
    assert (root / NAME / MARKER).is_file()
    assert os.listdir(elsewhere) == []


# --- property: only the run's directory goes, every byte elsewhere stays -------------------------------------

KINDS = ["file", "dir", "hardlink", "hardlink-out", "link-out-file", "link-out-dir", "dangling", "link-in"]
operations = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 50), st.integers(0, 70_000)), max_size=30)


def build(target: Path, outside: Path, ops: list[tuple[str, int, int]]) -> None:
    outside_files = sorted(p for p in outside.rglob("*") if p.is_file())
    outside_dirs = sorted(p for p in outside.rglob("*") if p.is_dir())
    dirs, files = [target], [target / MARKER]
    for n, (kind, pick, size) in enumerate(ops):
        parent = dirs[pick % len(dirs)]
        path = parent / f"e{n}"
        if kind == "file":
            path.write_bytes(os.urandom(size))
            files.append(path)
        elif kind == "dir":
            path.mkdir(mode=0o700 if pick % 3 == 0 else 0o755)
            dirs.append(path)
        elif kind == "hardlink":
            os.link(files[pick % len(files)], path)
        elif kind == "hardlink-out":
            os.link(outside_files[pick % len(outside_files)], path)
        elif kind == "link-out-file":
            path.symlink_to(outside_files[pick % len(outside_files)])
        elif kind == "link-out-dir":
            path.symlink_to(outside_dirs[pick % len(outside_dirs)], target_is_directory=True)
        elif kind == "dangling":
            path.symlink_to(outside / "no-such-thing")
        else:
            path.symlink_to(os.path.relpath(dirs[pick % len(dirs)], parent))
    if os.geteuid() == 0:  # like the cleanup pod (CAP_DAC_OVERRIDE): read-only folders a task left behind
        for folder in dirs[1::3]:
            folder.chmod(0o500)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_cleanup_removes_exactly_the_run_and_measures_it(ops: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as base:
        root, outside = Path(base) / "volume", Path(base) / "outside"
        root.mkdir()
        (outside / "sub" / "deeper").mkdir(parents=True)
        (outside / "a.bin").write_bytes(os.urandom(3000))
        (outside / "sub" / "b.txt").write_text("outside")
        (outside / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(9000))
        neighbour = make_run(root, "leoflow-staging-etl-run2-zzzz", run="run2")
        target = root / NAME
        target.mkdir()
        prepare(target, dag_id=DAG, run_id=RUN, directory=NAME)
        build(target, outside, ops)
        expected = usage(target)
        kept = snapshot(outside), snapshot(neighbour)

        result = cleanup(root, directory=NAME, dag_id=DAG, run_id=RUN)

        assert result == CleanupResult("removed", expected[0], expected[1], resumed=False)
        assert sorted(os.listdir(root)) == sorted([TRASH, neighbour.name])
        assert os.listdir(root / TRASH) == []
        assert (snapshot(outside), snapshot(neighbour)) == kept


# --- the CLI ---------------------------------------------------------------------------------------------------


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment without database or Kubernetes settings, and with a malformed one: never read."""
    for name in list(os.environ):
        if name.startswith("LEOFLOW_STAGING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEOFLOW_STAGING_INSTANCE", "Not A Label")
    monkeypatch.setenv("LEOFLOW_STAGING_TYPO", "x")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1
    return code, json.loads(out)


@pytest.mark.usefixtures("no_settings")
def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / NAME
    path.mkdir(mode=0o755)
    ids = ["--dag-id", DAG, "--run-id", RUN, "--directory", NAME]
    code, out = run_cli(capsys, "directory", "prepare", "--path", str(path), *ids)
    assert code == 0
    assert out["status"] == "prepared" and "marked" in out["detail"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777
    code, out = run_cli(capsys, "directory", "prepare", "--path", str(path), "--dag-id", "other", "--run-id", RUN,
                        "--directory", NAME)
    assert code == EXIT_REFUSED == 4
    assert out["status"] == "refused" and "belongs to dag 'etl'" in out["error"]


@pytest.mark.usefixtures("no_settings")
def test_cli_cleanup_writes_its_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    expected = usage(make_run(root, dag="étl", run="r1"))
    result_file = tmp_path / "termination-log"
    argv = ["directory", "cleanup", "--root", str(root), "--dag-id", "étl", "--run-id", "r1", "--directory", NAME,
            "--result-file", str(result_file)]
    code, out = run_cli(capsys, *argv)
    assert code == 0
    assert out == {"status": "removed", "bytes": expected[0], "files": expected[1], "resumed": False}
    assert json.loads(result_file.read_text("utf-8")) == out
    code, out = run_cli(capsys, *argv)
    assert (code, out) == (0, {"status": "absent", "bytes": 0, "files": 0, "resumed": False})


@pytest.mark.usefixtures("no_settings")
def test_cli_cleanup_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    make_run(root, run="someone-else")
    result_file = tmp_path / "termination-log"
    code, out = run_cli(capsys, "directory", "cleanup", "--root", str(root), "--dag-id", DAG, "--run-id", RUN,
                        "--directory", NAME, "--result-file", str(result_file))
    assert code == EXIT_REFUSED
    assert out["status"] == "refused" and "belongs to dag 'etl' run 'someone-else'" in out["error"]
    assert json.loads(result_file.read_text("utf-8")) == out
    assert (root / NAME / MARKER).is_file()


@pytest.mark.usefixtures("no_settings")
def test_cli_result_fits_a_termination_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result_file = tmp_path / "termination-log"
    long_root = "/" + "/".join(["ünïcode-" * 30] * 20)  # too long a path: the error quotes it
    code, out = run_cli(capsys, "directory", "cleanup", "--root", long_root, "--dag-id", DAG, "--run-id", RUN,
                        "--directory", NAME, "--result-file", str(result_file))
    assert code == EXIT_FAILED and out["status"] == "failed"  # no volume there: the next attempt may find it
    written = result_file.read_bytes()
    assert len(written) <= RESULT_MAX < 4096
    assert json.loads(written) == out and out["error"].endswith("…")


@pytest.mark.usefixtures("no_settings")
def test_cli_ids_that_start_with_a_dash_need_the_equals_form(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / NAME
    path.mkdir()
    code, out = run_cli(capsys, "directory", "prepare", f"--path={path}", "--dag-id=-dag", "--run-id=--run",
                        f"--directory={NAME}")
    assert (code, out["status"]) == (0, "prepared")
    assert json.loads((path / MARKER).read_text())["run_id"] == "--run"


def test_a_directory_replaced_while_it_is_measured_is_left_alone(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A late cleanup (its pod force-deleted, its container still running) measuring the run's old directory while
    another attempt removed it and a re-run got a fresh one of the same name never renames the fresh one."""
    target = make_run(tmp_path)
    real_measure = run_directory._measure

    def measure_then_swap(top: Path) -> tuple[int, int]:
        figures = real_measure(top)
        shutil.rmtree(top)  # the other attempt removed it ...
        make_run(tmp_path)  # ... and the re-run's first pod made a new one
        (top / "fresh.txt").write_text("the re-run's")
        return figures

    monkeypatch.setattr(run_directory, "_measure", measure_then_swap)
    with pytest.raises(DirectoryError, match="replaced while it was measured"):
        cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN)
    assert (target / "fresh.txt").read_text() == "the re-run's"


def test_entries_another_cleanup_removes_meanwhile_are_no_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two attempts removing the same renamed directory at once (a pod force-deleted while its container still
    runs, and the next attempt resuming beside it; seen on the node): the one that finds an entry gone goes on."""
    target = make_run(tmp_path)
    expected = usage(target)
    real_unlink = os.unlink

    def raced(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path) == "part-0.csv":  # the other attempt unlinked it first
            real_unlink(path, *args, **kwargs)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", raced)
    assert cleanup(tmp_path, directory=NAME, dag_id=DAG, run_id=RUN) == CleanupResult("removed", *expected, False)
    assert os.listdir(tmp_path / TRASH) == []
