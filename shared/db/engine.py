"""Engines with bounded waits, and the mapping of driver errors to ``DatabaseUnavailable``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import exc

from shared.errors import DatabaseUnavailable, DataRejected, SchemaError, SettingsError

MISSING_URL = ("LEOFLOW_STAGING_DATABASE_URL is not set: the metadatabase URL "
               "(postgresql://user:password@host:5432/db) is required")


def parse_url(url: str | None) -> sa.URL:
    """The URL, with plain ``postgresql://`` (libpq style, as psql takes it) meaning psycopg2."""
    if not url:
        raise SettingsError(MISSING_URL)
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        raise SettingsError("LEOFLOW_STAGING_DATABASE_URL is not a database URL "
                            "(expected e.g. postgresql://user:password@host:5432/db)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() != "postgresql":
        raise SettingsError(f"database {parsed.get_backend_name()!r} is not supported: the metadatabase is "
                            "PostgreSQL (LEOFLOW_STAGING_DATABASE_URL=postgresql://...)")
    return parsed


def make_engine(url: str | None, *, timeout: float, pool_size: int = 5, autocommit: bool = False,
                pre_ping: bool = True, synchronous_commit: bool = True) -> sa.Engine:
    """A PostgreSQL engine whose connect, statement and lock waits are all bounded by ``timeout`` seconds.
    A missing or non-PostgreSQL ``url`` raises ``SettingsError``.

    ``autocommit``: every statement commits by itself (the warm path's single read), so a connection going
    back to the pool has no transaction to roll back (no reset); with ``pre_ping=False`` the caller retries
    once on a connection found dead (``volumes_repo.read_live_volume`` does).

    ``synchronous_commit=False`` sets ``synchronous_commit=off`` for the engine's sessions: a commit does not
    wait for its WAL flush. Only for the webhook's read-only autocommit reader, whose ``FOR SHARE`` read makes
    each statement's implicit transaction write a commit record that protects nothing once it ends; never
    for an engine that writes rows (a crash could lose a commit already reported).
    """
    parsed = parse_url(url)
    millis = max(1, int(timeout * 1000))
    # TimeZone=UTC: a naive end_date in the runs table means UTC in SQL exactly as in Python
    # (the reclaim's guard compares in SQL; the server's own TimeZone must not shift it).
    options = (f"-c statement_timeout={millis} -c lock_timeout={millis}"
               f" -c idle_in_transaction_session_timeout={millis * 10} -c TimeZone=UTC")
    if not synchronous_commit:
        options += " -c synchronous_commit=off"
    return sa.create_engine(
        parsed,
        pool_pre_ping=pre_ping,
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_timeout=timeout,
        pool_recycle=300,
        pool_reset_on_return=None if autocommit else "rollback",
        connect_args={
            "connect_timeout": max(1, math.ceil(timeout)),
            "options": options,
            "application_name": "leoflow-staging",
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
        },
    )


def describe(url: str | None) -> str:
    """The URL without its password, for messages and logs."""
    if not url:
        return "<no database URL>"
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<malformed database URL>"


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn driver-level failures (down, timeout, pool exhausted) into ``DatabaseUnavailable``."""
    try:
        yield
    except exc.TimeoutError as err:
        raise DatabaseUnavailable(f"{what}: timed out waiting for a database connection") from err
    except (exc.DataError, exc.IntegrityError) as err:
        first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DataRejected(f"{what}: the database refused a value: {first}") from err
    except exc.ProgrammingError as err:
        first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise SchemaError(f"{what}: {first} (is the schema migrated? run `leoflow-staging migrate`)") from err
    except (exc.OperationalError, exc.InterfaceError) as err:
        first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DatabaseUnavailable(f"{what}: {first}") from err
