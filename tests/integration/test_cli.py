"""The console script as an operator runs it: migrate, volumes, and its error messages."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest
import sqlalchemy as sa

from shared.db import volumes_repo
from shared.volumes import NewVolume
from tests.support.webhook import console_script

pytestmark = pytest.mark.db


def _run(*args: str, url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    if url:
        full["LEOFLOW_STAGING_DATABASE_URL"] = url
    full.update(env)
    return subprocess.run([console_script(), *args], env=full, capture_output=True, text=True, timeout=120,
                          check=False)


def test_migrate_then_volumes(database_url: str) -> None:
    first = _run("migrate", url=database_url)
    assert first.returncode == 0, first.stderr
    assert "schema at revision 0006 (was empty)" in first.stdout and "***" not in first.stdout
    again = _run("migrate", url=database_url)
    assert "(was 0006)" in again.stdout
    engine = sa.create_engine(database_url)
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    with engine.begin() as conn:
        for run in ("r1", "r2\nspoof"):
            volumes_repo.insert_active(conn, NewVolume("ns", f"leoflow-staging-{len(run)}", "u", "etl", run, "nfs",
                                                       "1Gi"), now=now)
    engine.dispose()
    table = _run("volumes", url=database_url)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "PVC", "DAG", "RUN", "STATE", "CREATED", "DELETED", "REASON", "HELD"]
    assert len(lines) == 3 and "r2\\nspoof" in table.stdout  # a newline in an id cannot forge a row
    as_json = _run("volumes", "--json", "--run", "r1", url=database_url)
    [row] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert (row["run_id"], row["state"], row["pvc"]) == ("r1", "active", "leoflow-staging-2")


def test_clear_errors_and_exit_codes(database_url: str) -> None:
    bad = _run("volumes", LEOFLOW_STAGING_DB_TIMEOUT="soon")
    assert bad.returncode == 2 and "LEOFLOW_STAGING_DB_TIMEOUT='soon'" in bad.stderr
    down = _run("volumes", url="postgresql://nobody@127.0.0.1:1/none", LEOFLOW_STAGING_DB_TIMEOUT="1")
    assert down.returncode == 3 and "reading staging_volumes" in down.stderr and "Traceback" not in down.stderr
    serve = _run("serve", url=database_url)
    assert serve.returncode == 2 and "--cert-file" in serve.stderr
    for command in ("migrate", "gc", "volumes"):  # PostgreSQL only: no URL, no default
        missing = _run(command)
        assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
        assert f"leoflow-staging {command}: configuration error: LEOFLOW_STAGING_DATABASE_URL is not set" \
            in missing.stderr, missing.stderr
