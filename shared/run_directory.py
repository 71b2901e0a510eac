"""A run's directory on a shared claim (the shared-claim mode): its marker, its preparation and its removal.

Layout of a shared volume::

    <root>/<directory>/                          a run's directory, mounted with ``subPath`` in the run's pods
    <root>/<directory>/.leoflow-staging-run      its marker: {"dag_id", "run_id", "directory"}, root's, 0644
    <root>/.leoflow-staging-reclaiming/          root's, 0700: a directory is renamed here, then removed
    <root>/.leoflow-staging-reclaiming/<directory>.size   its size, measured before the rename

``prepare`` runs in each of the run's pods (an init container, uid 0 without capabilities); ``cleanup`` runs in
the GC's cleanup pod (uid 0 with CAP_DAC_OVERRIDE and CAP_FOWNER only). Neither ever follows a symbolic link
that a task made. Every failure is a ``DirectoryError``; a killed cleanup is finished by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from shared.errors import StagingError
from shared.naming import id_problem

MARKER = ".leoflow-staging-run"
TRASH = ".leoflow-staging-reclaiming"

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS label: no '.', '/', '..' or empty name
_MARKER_MAX = 64 * 1024  # two ids of <= 250 characters fit many times over
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DirectoryFailed(StagingError):
    """The file system failed a step (permission, full disk, I/O): nothing that a retry needs was lost, and the
    next attempt goes on where this one stopped. Not a refusal."""


class DirectoryError(StagingError):
    """A run's directory cannot be prepared or removed: a bad name, not the run's, or the file system refused
    (the message names the path and the system's reason). Nothing was removed that a retry would need."""


@dataclass(frozen=True)
class CleanupResult:
    """What ``cleanup`` did: ``bytes`` is the space the directory held (st_blocks, each inode once), ``files``
    its entries that are no directory; ``resumed`` when an earlier, killed cleanup had already renamed it."""

    status: Literal["removed", "absent"]
    bytes: int
    files: int
    resumed: bool


def prepare(path: Path, *, dag_id: str, run_id: str, directory: str, mode: int = 0o1777) -> str:
    """Mark ``path`` (the run's directory, as mounted in its pod) as the run's and give it ``mode``.

    Writes the marker when there is none; refuses a directory whose marker names another run. The default mode
    lets tasks of any uid create files, and the sticky bit keeps them from removing each other's files or the
    marker. Idempotent. Returns what it did, in one line."""
    _check_name(directory)
    _check_ids(dag_id, run_id)
    run = _run(dag_id, run_id)
    try:
        before = os.lstat(path).st_mode
        if not stat.S_ISDIR(before):
            raise DirectoryError(f"{path} is {_kind(before)}, not a directory: the directory of {run} is not mounted")
        found = _read_marker(path)
        if found is None:
            # The generation: a new directory of the run (after a reclaim) gets a new one (the cleanup checks it).
            _write_json(path / MARKER, {"dag_id": dag_id, "run_id": run_id, "directory": directory,
                                        "generation": secrets.token_hex(8)}, mode=0o644)
            marked = f"marked {path} as the directory {directory} of {run}"
        elif found == (dag_id, run_id):
            marked = f"{path} is already marked as the directory {directory} of {run}"
        else:
            raise DirectoryError(f"{path} belongs to {_run(*found)}, not to {run}")
        if stat.S_IMODE(before) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        _fail(exc, path)
    old = stat.S_IMODE(before)
    return f"{marked}; mode {old:04o}" + ("" if old == mode else f" -> {mode:04o}")


def cleanup(root: Path, *, directory: str, dag_id: str, run_id: str) -> CleanupResult:
    """Remove the run's directory ``root/directory`` from the shared volume mounted at ``root``.

    Only a real directory whose marker names exactly this run is removed. It is measured, renamed into the
    trash (its name is free again at once), then removed there. A directory already in the trash (a cleanup
    was killed) is finished, reporting the figures measured before the kill."""
    _check_name(directory)
    _check_ids(dag_id, run_id)
    target, trash_root = root / directory, root / TRASH
    trash, size_file = trash_root / directory, trash_root / f"{directory}.size"
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):  # the mount point itself may be a link
            raise DirectoryError(f"{root} is not a directory: the shared volume is not mounted there")
        found = _mode(target)
        if found is None:
            return _resume(trash, size_file)
        if not stat.S_ISDIR(found):
            raise DirectoryError(f"{target} is {_kind(found)}, not a run's directory: left as it is")
        owner = _read_marker(target)
        if owner is None:
            raise DirectoryError(f"{target} has no marker {MARKER}, so it is not known to be the directory of "
                                 f"{_run(dag_id, run_id)}: left as it is")
        if owner != (dag_id, run_id):
            raise DirectoryError(f"{target} belongs to {_run(*owner)}, not to {_run(dag_id, run_id)}: "
                                 "left as it is")
        checked = _marker_bytes(target)
        _make_trash(trash_root)
        size, files = _measure(target)
        _record(size_file, size, files)
        if _marker_bytes(target) != checked:  # a new directory of the run (its own generation) replaced it
            raise DirectoryError(f"{target} was replaced while it was measured (a new directory of the run): "
                                 "left as it is")
        if _mode(trash) is not None:  # an earlier directory of this name, renamed (so checked) by a killed cleanup
            _remove(trash)
        os.rename(target, trash)
        _remove(trash)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(size_file)
    except OSError as exc:
        _fail(exc, target)
    except RecursionError:
        raise DirectoryError(f"{target}: its tree is too deep to walk") from None
    return CleanupResult("removed", size, files, resumed=False)


def _resume(trash: Path, size_file: Path) -> CleanupResult:
    """Finish a cleanup that was killed after its rename (or after its removal, before it reported)."""
    if _mode(trash) is None and _mode(size_file) is None:
        return CleanupResult("absent", 0, 0, resumed=False)
    size, files = _read_size(size_file)
    if _mode(trash) is not None:
        _remove(trash)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(size_file)
    return CleanupResult("removed", size, files, resumed=True)


def _check_name(directory: str) -> None:
    if not _NAME.fullmatch(directory):
        raise DirectoryError(f"{directory!r} is no run directory name (a DNS label: a-z, 0-9 and '-', "
                             "at most 63 characters)")


def _check_ids(dag_id: str, run_id: str) -> None:
    for what, value in (("dag_id", dag_id), ("run_id", run_id)):
        problem = id_problem(value)
        if problem:
            raise DirectoryError(f"{what} {value!r} {problem}")


def _run(dag_id: str, run_id: str) -> str:
    return f"dag {dag_id!r} run {run_id!r}"


def _fail(exc: OSError, path: Path) -> NoReturn:
    where = exc.filename if exc.filename is not None else path
    raise DirectoryFailed(f"{where}: {exc.strerror or exc}") from exc


def _mode(path: Path) -> int | None:
    """``path``'s mode without following a link, or None when there is nothing there."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _marker_bytes(directory: Path) -> bytes | None:
    """The marker's content as it is now (compared before the rename: a new generation has another)."""
    try:
        fd = os.open(directory / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, _MARKER_MAX + 1)
    finally:
        os.close(fd)


def _read_marker(directory: Path) -> tuple[str, str] | None:
    """The (dag_id, run_id) that ``directory``'s marker names, or None when it has none. A marker that is a
    link, no regular file or no marker's JSON is refused."""
    marker = directory / MARKER
    try:  # O_NONBLOCK: a FIFO named like the marker must not hang the open
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DirectoryError(f"{marker} is a symbolic link, not a marker: left as it is") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DirectoryError(f"{marker} is no regular file, so no marker: left as it is")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(_MARKER_MAX + 1)
    finally:
        os.close(fd)
    try:
        content = json.loads(data.decode("utf-8")) if len(data) <= _MARKER_MAX else None
    except ValueError:  # not UTF-8, or not JSON
        content = None
    if not (isinstance(content, dict) and isinstance(content.get("dag_id"), str)
            and isinstance(content.get("run_id"), str)):
        raise DirectoryError(f"{marker} is no marker (expected JSON with a dag_id and a run_id): left as it is")
    return content["dag_id"], content["run_id"]


def _write_json(path: Path, content: Mapping[str, object], *, mode: int) -> None:
    """Write ``content`` to ``path`` atomically: a temporary file beside it, then ``os.replace``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(json.dumps(dict(content), ensure_ascii=False).encode("utf-8"))
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _make_trash(trash_root: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(trash_root, 0o700)
    found = os.lstat(trash_root).st_mode
    if not stat.S_ISDIR(found):
        raise DirectoryError(f"{trash_root} is {_kind(found)}, not the trash directory: nothing removed")


def _measure(top: Path) -> tuple[int, int]:
    """The bytes ``top`` holds (st_blocks * 512 of ``top`` and of every entry under it, each inode once) and
    its entries that are no directory. Never follows a link (``os.fwalk`` walks by file descriptor)."""
    st = os.lstat(top)
    seen = {(st.st_dev, st.st_ino)}
    size, files = st.st_blocks * 512, 0

    def fail(exc: OSError) -> NoReturn:
        raise exc

    for _, dirs, names, dir_fd in os.fwalk(top, follow_symlinks=False, onerror=fail):
        for name in dirs + names:  # a link to a directory is listed in ``dirs`` but never entered
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                files += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
    return size, files


def _record(size_file: Path, size: int, files: int) -> None:
    """Keep the figures for a resumed cleanup. On a full volume they are dropped (the removal matters more):
    a cleanup killed after that reports 0."""
    try:
        _write_json(size_file, {"bytes": size, "files": files}, mode=0o600)
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(size_file)  # an older figure must not be reported for this directory


def _read_size(size_file: Path) -> tuple[int, int]:
    """The figures ``_record`` kept; (0, 0) when they are missing or unreadable (lost figures, not a failure)."""
    try:
        content = json.loads(size_file.read_bytes())
        return int(content["bytes"]), int(content["files"])
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return 0, 0


def _remove(trash: Path) -> None:
    """Remove a renamed directory; ``shutil.rmtree`` removes links as links and resists link races. An entry
    that is already gone is no error: another cleanup of the same directory may be removing it at the same time
    (a pod force-deleted while its container still runs, and the next attempt resuming beside it)."""
    found = _mode(trash)
    if found is not None and not stat.S_ISDIR(found):
        raise DirectoryError(f"{trash} is {_kind(found)}, not a renamed run directory: left as it is")

    def gone_already(function: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(trash, onerror=gone_already)
