"""Schema migrations with Alembic, in our own version table (the orchestrator owns ``alembic_version``)."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "leoflow_staging_alembic_version"
_SCRIPTS = Path(__file__).resolve().parent / "migrations"


def _config(conn: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migration scripts, parsed once per process (/readyz asks every few seconds)."""
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this code knows."""
    rev = _scripts().get_current_head()
    if rev is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations found")
    return rev


def current(engine: sa.Engine) -> str | None:
    """The revision the database is at (None when never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def schema_problem(engine: sa.Engine) -> str | None:
    """Why this code cannot use the schema, or None. A revision this code does not know is
    newer (a later release migrated first, e.g. during a rolling upgrade or after a rollback):
    migrations only add, so it is usable."""
    revision = current(engine)
    if revision is None:
        return "the database has no leoflow-staging schema: run `leoflow-staging migrate`"
    known = {rev.revision for rev in _scripts().walk_revisions()}
    if revision in known and revision != head():
        return f"database schema at revision {revision}, this version needs {head()}: run `leoflow-staging migrate`"
    return None


def upgrade(engine: sa.Engine, revision: str = "head") -> str:
    """Bring the schema to ``revision``; safe to run again. Returns the revision reached."""
    with engine.begin() as conn:
        # Two migrate Jobs at once (a re-run hook) wait for each other instead of racing.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('leoflow-staging-migrate'))"))
        command.upgrade(_config(conn), revision)
    reached = current(engine)
    return reached or ""
