"""`hold`, `release` and `reclaim`'s refusals as an operator runs them, on the real PostgreSQL: the rows, what
`volumes` and `volumes --summary` show, and the messages and exit codes of bad input. (The GC honouring holds
and `reclaim` deleting a PVC are proven against the real apiserver in tests/e2e/test_holds_reclaim.py.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from shared.db import volumes_repo
from shared.db.migrate import upgrade
from shared.volumes import NewVolume
from tests.support.orchestrator import create_runs_table, set_run
from tests.support.webhook import console_script

pytestmark = pytest.mark.db


def _run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env["LEOFLOW_STAGING_DATABASE_URL"] = url
    return subprocess.run([console_script(), *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False, stdin=subprocess.DEVNULL)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    upgrade(engine)
    create_runs_table(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for ns, run in (("etl", "r1"), ("etl", "twice"), ("other", "twice"), ("etl", "done")):
            volumes_repo.insert_active(conn, NewVolume(ns, f"leoflow-staging-{ns}-{run}", f"uid-{ns}-{run}", "etl",
                                                       run, "nfs", "1Gi"), now=now)
        done = volumes_repo.live_volume(conn, "etl", "leoflow-staging-etl-done", lock=False)
        assert done is not None
        volumes_repo.close_missing(conn, done.id, now=now, detail="gone")
    yield engine
    engine.dispose()


def _json_rows(url: str, *args: str) -> list[dict[str, object]]:
    done = _run(url, "volumes", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_hold_shows_in_volumes_and_summary_then_release_ends_it(engine: sa.Engine, database_url: str) -> None:
    before = dt.datetime.now(dt.UTC)
    held = _run(database_url, "hold", "etl", "r1", "--for", "72h", "--reason", "debugging the transform")
    assert held.returncode == 0, held.stderr
    assert held.stdout.startswith("etl/leoflow-staging-etl-r1 (run 'r1' of DAG 'etl'): held until ")
    assert held.stdout.rstrip().endswith(": debugging the transform") and "@" in held.stdout  # who: user@host
    [row] = _json_rows(database_url, "--run", "r1")
    until = dt.datetime.fromisoformat(str(row["held_until"]))
    assert before + dt.timedelta(hours=72) <= until <= dt.datetime.now(dt.UTC) + dt.timedelta(hours=72)
    assert row["hold_reason"] == "debugging the transform" and row["held_at"] and "@" in str(row["held_by"])
    table = _run(database_url, "volumes", "--run", "r1").stdout.splitlines()
    assert table[0].split()[-1] == "HELD" and table[1].split()[-3:-1] == ["until", until.strftime("%Y-%m-%d")]
    summary = json.loads(_run(database_url, "volumes", "--summary", "--json").stdout)
    assert summary["held_volumes"] == 1 and 0 <= summary["oldest_hold_seconds"] < 60
    assert "  held: 1 (oldest hold set" in _run(database_url, "volumes", "--summary").stdout

    released = _run(database_url, "release", "etl", "r1")
    assert released.returncode == 0 and "hold released" in released.stdout
    [row] = _json_rows(database_url, "--run", "r1")
    assert dt.datetime.fromisoformat(str(row["held_until"])) <= dt.datetime.now(dt.UTC)  # ended now ...
    assert row["hold_reason"] == "debugging the transform"  # ... and who, when and why stay as its audit
    assert _run(database_url, "volumes", "--run", "r1").stdout.splitlines()[1].split()[-1] == "-"
    assert json.loads(_run(database_url, "volumes", "--summary", "--json").stdout)["held_volumes"] == 0
    again = _run(database_url, "release", "etl", "r1")
    assert again.returncode == 0 and "not held; nothing to release" in again.stdout


def test_bad_input_gets_a_precise_message_and_exit_code_2(engine: sa.Engine, database_url: str) -> None:
    cases = [
        (("hold", "etl", "r1", "--for", "abc"), "hold: --for 'abc': expected a duration with a unit"),
        (("hold", "etl", "r1", "--for=-3h"), "hold: --for '-3h': a hold cannot last a negative time"),
        (("hold", "etl", "r1", "--for", "0m"), "longer than 0"),
        (("hold", "etl", "nope", "--for", "1h"),
         "hold: no staging volume is recorded for run 'nope' of DAG 'etl'"),
        (("release", "etl", "nope"), "release: no staging volume is recorded for run 'nope' of DAG 'etl'"),
        (("reclaim", "etl", "nope", "--yes"), "reclaim: no staging volume is recorded for run 'nope' of DAG 'etl'"),
        (("hold", "etl", "twice", "--for", "1h"),
         "run 'twice' of DAG 'etl' has volumes in namespaces etl, other: choose one with -n NAMESPACE"),
        (("hold", "etl", "done", "--for", "1h"), "the volume of run 'done' of DAG 'etl' was already reclaimed at "),
        (("reclaim", "etl", "r1", "-n", "other", "--yes"),
         "no staging volume is recorded for run 'r1' of DAG 'etl' in namespace 'other'"),
    ]
    for args, message in cases:
        done = _run(database_url, *args)
        assert (done.returncode, done.stdout) == (2, ""), (args, done)
        assert message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert "(pvc_missing)" in _run(database_url, "hold", "etl", "done", "--for", "1h").stderr
    usage = _run(database_url, "hold", "etl", "r1")  # --for is required
    assert usage.returncode == 2 and "--for" in usage.stderr
    assert all(r["held_until"] is None for r in _json_rows(database_url))  # nothing was held
    ok = _run(database_url, "hold", "etl", "twice", "-n", "other", "--for", "1h")
    assert ok.returncode == 0 and ok.stdout.startswith("other/leoflow-staging-other-twice")


def test_reclaim_refuses_a_run_that_has_not_ended_a_held_volume_and_no_confirmation(
        engine: sa.Engine, database_url: str) -> None:
    for state in ("queued", "running"):
        set_run(engine, "etl", "r1", state)
        refused = _run(database_url, "reclaim", "etl", "r1", "--yes")
        assert refused.returncode == 1, refused
        assert f"etl/leoflow-staging-etl-r1 (run 'r1' of DAG 'etl'): run is {state}; a volume is reclaimed only " \
               "once its run has ended (success, failed) or is gone" in refused.stderr
    set_run(engine, "etl", "r1", "failed", dt.datetime.now(dt.UTC))
    unconfirmed = _run(database_url, "reclaim", "etl", "r1")  # no terminal to ask on, no --yes
    assert unconfirmed.returncode == 1 and "pass --yes" in unconfirmed.stderr
    assert _run(database_url, "hold", "etl", "r1", "--for", "2h", "--reason", "look first").returncode == 0
    held = _run(database_url, "reclaim", "etl", "r1", "--yes")
    assert held.returncode == 1 and "is held until " in held.stderr and "release the hold first" in held.stderr
    [row] = _json_rows(database_url, "--run", "r1")
    assert row["state"] == "active"
