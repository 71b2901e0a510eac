"""Inventory metrics from the real PostgreSQL: the numbers, one cached read per scrape window, a dead
database that still leaves /metrics answering."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from shared.db import volumes_repo
from shared.db.engine import make_engine
from shared.db.inventory import load_inventory, load_snapshot
from shared.db.migrate import upgrade
from shared.settings import RunsTable
from shared.volumes import DeleteReason, NewVolume
from tests.support.orchestrator import create_runs_table, set_run
from webhook import metrics
from webhook.inventory_metrics import CachedRead, InventoryCollector

pytestmark = pytest.mark.db
T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    upgrade(engine)
    create_runs_table(engine)
    yield engine
    engine.dispose()


def _volume(conn: sa.Connection, ns: str, name: str, run: str, cls: str = "nfs", size: str = "1Gi") -> int:
    volumes_repo.insert_active(conn, NewVolume(ns, name, f"uid-{name}", "etl", run, cls, size), now=T0)
    row = volumes_repo.live_volume(conn, ns, name, lock=False)
    assert row is not None
    return row.id


def _populate(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        _volume(conn, "a", "p1", "r1")
        _volume(conn, "a", "p2", "r2", size="500Mi")
        _volume(conn, "b", "p3", "r3", cls="cephfs", size="2G")
        old_fail = _volume(conn, "b", "p4", "f-old")
        _volume(conn, "b", "p5", "f-new", size="not-a-size")
        gone = _volume(conn, "a", "p6", "done")
        volumes_repo.begin_reclaim(conn, gone, reason=DeleteReason.RUN_SUCCEEDED, now=T0, still_reclaimable=sa.true())
        volumes_repo.finish_reclaim(conn, gone, now=T0)
        busy = _volume(conn, "a", "p7", "ttl")
        volumes_repo.begin_reclaim(conn, busy, reason=DeleteReason.TTL_EXPIRED, now=T0, still_reclaimable=sa.true())
        assert old_fail
    set_run(engine, "etl", "f-old", "failed", T0 - dt.timedelta(hours=5))
    set_run(engine, "etl", "f-new", "failed", T0 - dt.timedelta(hours=1))
    set_run(engine, "etl", "r1", "running")


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_inventory_numbers(engine: sa.Engine) -> None:
    _populate(engine)
    inv = load_inventory(engine, RunsTable(), now=T0)
    assert inv.volumes_by_state() == {"active": 5, "reclaiming": 1}
    assert inv.requested_bytes() == {("a", "nfs"): 2**30 + 500 * 2**20 + 2**30, ("b", "cephfs"): 2e9,
                                     ("b", "nfs"): 2**30}
    assert (inv.failed_kept, inv.oldest_failed_kept_seconds()) == (2, 5 * 3600.0)
    assert inv.reclaims == {"run_succeeded": 1}


def test_metrics_text_and_one_read_per_window(engine: sa.Engine, database_url: str) -> None:
    _populate(engine)
    reader = make_engine(database_url, timeout=2, pool_size=1)
    statements: list[str] = []
    sa.event.listen(reader, "before_cursor_execute", lambda *a: statements.append(a[2]))
    clock = [100.0]
    collector = InventoryCollector(CachedRead(lambda: load_snapshot(reader, RunsTable(), now=T0), ttl=5,
                                              clock=lambda: clock[0], what="inventory read"))
    for _ in range(10):  # ten scrapes inside one window: one database read
        text, _ = metrics.render(None, collector)
    reads = len(statements)
    queries = [s for s in statements if s.startswith("SELECT")]
    assert len(queries) == 5, statements  # five aggregate statements (and a savepoint), however many series
    fams = _families(text.decode())
    assert fams["leoflow_staging_inventory_up"] == [({}, 1.0)]
    assert fams["leoflow_staging_runs_table_up"] == [({}, 1.0)]
    assert ({"state": "active", "namespace": "a", "storage_class": "nfs"}, 2.0) in fams["leoflow_staging_volumes"]
    assert ({"state": "reclaiming", "namespace": "a", "storage_class": "nfs"}, 1.0) in fams["leoflow_staging_volumes"]
    assert ({"namespace": "b", "storage_class": "cephfs"}, 2e9) in fams["leoflow_staging_requested_bytes"]
    assert fams["leoflow_staging_failed_kept_volumes"] == [({}, 2.0)]
    assert fams["leoflow_staging_oldest_failed_kept_seconds"] == [({}, 18000.0)]
    assert fams["leoflow_staging_reclaims"] == [({"reason": "run_succeeded"}, 1.0)]
    assert "leoflow_staging_admission_duration_seconds" in fams  # the process's own series are still there
    clock[0] += 5
    metrics.render(None, collector)
    assert len(statements) == 2 * reads  # the window ended: read again
    reader.dispose()


def test_database_down_keeps_metrics_answering(engine: sa.Engine) -> None:
    dead = make_engine("postgresql://nobody@127.0.0.1:9/none", timeout=1, pool_size=1)
    collector = InventoryCollector(CachedRead(lambda: load_snapshot(dead, RunsTable(), now=T0), ttl=60,
                                              what="inventory read"))
    started = time.monotonic()
    text, _ = metrics.render(None, collector)
    first = time.monotonic() - started
    started = time.monotonic()
    metrics.render(None, collector)  # the failure is cached too: no second attempt in the window
    again = time.monotonic() - started
    fams = _families(text.decode())
    assert fams["leoflow_staging_inventory_up"] == [({}, 0.0)]
    assert "leoflow_staging_volumes" not in fams
    assert "leoflow_staging_admissions" in fams  # the rest of /metrics is untouched
    assert first < 3 and again < 0.5


def test_an_unreadable_runs_table_leaves_the_rest_of_the_inventory(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    upgrade(engine)  # no runs table here (the orchestrator's may live elsewhere, or not be granted)
    with engine.begin() as conn:
        _volume(conn, "a", "p1", "r1")
    collector = InventoryCollector(CachedRead(lambda: load_snapshot(engine, RunsTable(), now=T0), ttl=0,
                                              what="inventory read"))
    fams = _families(metrics.render(None, collector)[0].decode())
    assert fams["leoflow_staging_inventory_up"] == [({}, 1.0)]
    assert fams["leoflow_staging_runs_table_up"] == [({}, 0.0)]
    assert "leoflow_staging_failed_kept_volumes" not in fams
    assert fams["leoflow_staging_volumes"] == [({"state": "active", "namespace": "a", "storage_class": "nfs"}, 1.0)]
    engine.dispose()
