"""An audit of millions of deleted rows keeps /metrics cheap: the scrape completes under a short statement
timeout (inventory_up 1, the GC-health series present) where counting the rows, as /metrics used to, is
cancelled; pruning in bounded batches leaves the counters as they were."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from devenv.audit_rows import OLD_RECLAIM_COUNT, seed_deleted_rows
from shared.db import audit_prune, sweeps_repo
from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.settings import RunsTable
from shared.sweeps import SweepRecord, SweepStatus
from tests.support.orchestrator import create_runs_table
from webhook import metrics
from webhook.inventory_metrics import CachedRead, InventoryCollector

pytestmark = pytest.mark.db
ROWS = 2_000_000


def test_a_scrape_stays_cheap_over_millions_of_deleted_rows(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    upgrade(engine)
    create_runs_table(engine)
    seed_deleted_rows(engine, ROWS)
    now = dt.datetime.now(dt.UTC)
    sweeps_repo.save_sweep(engine, SweepRecord(started_at=now, finished_at=now, status=SweepStatus.COMPLETED,
                                               duration_seconds=1.5, counts={"reclaimed": 3}))
    with engine.connect() as conn:
        started = time.monotonic()
        old = {reason: int(n) for reason, n in conn.execute(OLD_RECLAIM_COUNT)}
        full_count = time.monotonic() - started
    assert sum(old.values()) == ROWS
    # A statement timeout the full count cannot meet (half its own time, at most 200 ms): each of the scrape's
    # statements must, or inventory_up goes 0 and every GC-health series disappears.
    timeout = min(0.2, full_count / 2)
    reader = make_engine(database_url, timeout=timeout, pool_size=1)
    with pytest.raises(sa.exc.OperationalError, match="statement timeout"), reader.connect() as conn:
        conn.execute(OLD_RECLAIM_COUNT).all()
    from shared.db.inventory import load_snapshot

    collector = InventoryCollector(CachedRead(lambda: load_snapshot(reader, RunsTable(), now=now), ttl=0,
                                              what="inventory read"))
    started = time.monotonic()
    text, _ = metrics.render(None, collector)
    scrape = time.monotonic() - started
    fams = {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text.decode())}
    assert fams["leoflow_staging_inventory_up"] == [({}, 1.0)], (full_count, timeout, scrape)
    assert {labels["reason"]: n for labels, n in fams["leoflow_staging_reclaims"]} == old
    assert fams["leoflow_staging_gc_last_success_timestamp_seconds"] == [({}, now.timestamp())]
    assert ({"outcome": "reclaimed"}, 3.0) in fams["leoflow_staging_gc_last_sweep_results"]
    assert fams["leoflow_staging_gc_skipped_sweeps"] == [({}, 0.0)]
    print(f"{ROWS} deleted rows: full count {full_count * 1000:.0f} ms, scrape {scrape * 1000:.1f} ms "
          f"(statement timeout {timeout * 1000:.0f} ms)")

    # The retention's prune: nothing is older than 25 days; one bounded batch of the older ones; the counters stay.
    assert audit_prune.prune_deleted(engine, cutoff=now - dt.timedelta(days=25)) == 0
    with engine.begin() as conn:
        started = time.monotonic()
        assert audit_prune.prune_batch(conn, cutoff=now - dt.timedelta(days=10)) == audit_prune.BATCH
        batch = time.monotonic() - started
    assert batch < 5, batch  # the oldest first through the deleted_at index, not a scan of the history
    text, _ = metrics.render(None, collector)
    fams = {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text.decode())}
    assert {labels["reason"]: n for labels, n in fams["leoflow_staging_reclaims"]} == old
    reader.dispose()
    engine.dispose()
