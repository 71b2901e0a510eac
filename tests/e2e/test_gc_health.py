"""GC health: each sweep (and each skipped one) is recorded, exported on /metrics and printed by
`volumes --summary`; retention keeps the table small. Real PostgreSQL, real control plane."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from shared.db import sweeps_repo
from shared.db.inventory import load_snapshot
from shared.db.locks import single_flight
from shared.settings import RunsTable
from shared.sweeps import SweepRecord, SweepStatus
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import set_run
from tests.support.webhook import console_script
from webhook import metrics
from webhook.inventory_metrics import CachedRead, InventoryCollector

pytestmark = pytest.mark.e2e
H = dt.timedelta(hours=1)


def _rows(engine: sa.Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM gc_sweeps ORDER BY id"))]


def _metrics(engine: sa.Engine, now: dt.datetime) -> dict[str, list[tuple[dict[str, str], float]]]:
    collector = InventoryCollector(CachedRead(lambda: load_snapshot(engine, RunsTable(), now=now), ttl=0,
                                              what="inventory read"))
    text, _ = metrics.render(None, collector)
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text.decode())}


def test_sweeps_are_recorded_exported_and_summarised(bench: Bench, database_url: str) -> None:
    bench.admit("etl", "ok")
    bench.admit("etl", "bad")
    bench.admit("etl", "live")
    set_run(bench.engine, "etl", "ok", "success", T0)
    set_run(bench.engine, "etl", "bad", "failed", T0 - 2 * H)
    set_run(bench.engine, "etl", "live", "running")
    assert bench.sweep() == 0
    bench.now = T0 + dt.timedelta(minutes=5)
    with single_flight(bench.engine) as held:  # two sweeps find the lock taken: both are recorded
        assert held
        assert bench.sweep() == 0
        bench.now = T0 + dt.timedelta(minutes=10)
        assert bench.sweep() == 0
    rows = _rows(bench.engine)
    assert [(r["status"], r["reclaimed"], r["kept"], r["failed"]) for r in rows] == [
        ("completed", 1, 2, 0), ("skipped", 0, 0, 0), ("skipped", 0, 0, 0)]
    assert rows[0]["finished_at"] == T0

    fams = _metrics(bench.engine, now=T0 + dt.timedelta(minutes=11))
    assert fams["leoflow_staging_gc_last_success_timestamp_seconds"] == [({}, T0.timestamp())]
    assert fams["leoflow_staging_gc_skipped_sweeps"] == [({}, 2.0)]
    results = dict((s["outcome"], v) for s, v in fams["leoflow_staging_gc_last_sweep_results"])
    assert results["reclaimed"] == 1 and results["kept"] == 2 and results["failed"] == 0
    assert fams["leoflow_staging_gc_last_sweep_duration_seconds"][0][1] > 0
    assert fams["leoflow_staging_failed_kept_volumes"] == [({}, 1.0)]
    assert fams["leoflow_staging_reclaims"] == [({"reason": "run_succeeded"}, 1.0)]

    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env["LEOFLOW_STAGING_DATABASE_URL"] = database_url
    out = subprocess.run([console_script(), "volumes", "--summary"], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    print(out)  # the on-call's view (pasted in the closing note)
    assert "2 active, 0 reclaiming; 2Gi requested" in out
    assert "failed-run kept: 1 (oldest run ended" in out
    assert "reclaimed (all time): run_succeeded 1" in out
    assert "its results: reclaimed 1, terminating 0, kept 2" in out
    assert "skipped sweeps since: 2" in out
    data = json.loads(subprocess.run([console_script(), "volumes", "--summary", "--json"], env=env,
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    assert data["gc"]["skipped_sweeps"] == 2 and data["volumes"] == {"active": 2, "reclaiming": 0}

    bench.now = T0 + dt.timedelta(minutes=15)
    assert bench.sweep() == 0  # a completed sweep resets the skipped count
    assert _metrics(bench.engine, now=bench.now)["leoflow_staging_gc_skipped_sweeps"] == [({}, 0.0)]


def test_dry_runs_are_not_recorded_and_retention_is_bounded(bench: Bench) -> None:
    bench.sweep(dry_run=True)
    assert _rows(bench.engine) == []
    with single_flight(bench.engine) as held:  # an operator's dry run during a sweep is no skipped sweep
        assert held
        assert bench.sweep(dry_run=True) == 0
    assert _rows(bench.engine) == []
    with bench.engine.begin() as conn:
        for i in range(8):
            at = T0 + dt.timedelta(minutes=i)
            sweeps_repo.record_sweep(conn, SweepRecord(at, at, SweepStatus.COMPLETED, 0.5, {"kept": i}), retain=5)
    rows = _rows(bench.engine)
    assert [r["kept"] for r in rows] == [3, 4, 5, 6, 7]  # the newest five, pruned in the same transaction


def test_a_gc_that_never_ran_reports_zero(bench: Bench) -> None:
    fams = _metrics(bench.engine, now=T0)
    assert fams["leoflow_staging_gc_last_success_timestamp_seconds"] == [({}, 0.0)]
    assert fams["leoflow_staging_inventory_up"] == [({}, 1.0)]
