"""Single flight for the GC: a PostgreSQL session advisory lock, or a file lock beside a SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

import sqlalchemy as sa

_GC_LOCK_KEY = 0x1E0F1057A6  # an arbitrary, fixed 64-bit key for "leoflow-staging gc"


@contextlib.contextmanager
def single_flight(engine: sa.Engine) -> Iterator[bool]:
    """Yields True when this process holds the GC lock (held until the block ends), else False."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _GC_LOCK_KEY}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _GC_LOCK_KEY})
                    conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    path = f"{database}.gc.lock" if database and database != ":memory:" else None
    if path is None:
        yield True  # an in-memory database lives in one process only
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
