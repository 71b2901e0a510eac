"""The audit retention in a real sweep: rows deleted longer ago than the retention (90 days by default) are pruned
at the end of a sweep, logged (`audit_pruned`, `pruned` in the summary); younger rows and live ones stay, and the
reclaim counts never go down."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from shared.db import reclaim_counts
from shared.volumes import VolumeState
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import set_run

pytestmark = pytest.mark.e2e
DAY = dt.timedelta(days=1)


def _lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)  # type: ignore[attr-defined]
            and r.fields.get("event") == event]  # type: ignore[attr-defined]


def test_a_sweep_prunes_rows_older_than_the_retention_and_keeps_the_counts(
        bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bench.admit("etl", "old")
    set_run(bench.engine, "etl", "old", "success", T0)
    assert bench.sweep() == 0  # reclaimed at T0
    bench.now = T0 + 50 * DAY
    bench.admit("etl", "young")
    bench.admit("etl", "live")
    set_run(bench.engine, "etl", "young", "success", bench.now)
    set_run(bench.engine, "etl", "live", "running")
    assert bench.sweep() == 0  # "young" reclaimed at T0 + 50 d
    assert _lines(caplog, "audit_pruned") == [] and [s["pruned"] for s in _lines(caplog, "sweep_summary")] == [0, 0]
    bench.now = T0 + 90 * DAY + dt.timedelta(seconds=1)  # "old" was deleted more than 90 days ago
    assert bench.sweep() == 0
    [pruned] = _lines(caplog, "audit_pruned")
    assert (pruned["pruned"], pruned["cutoff"]) == (1, (bench.now - 90 * DAY).isoformat())
    assert _lines(caplog, "sweep_summary")[-1]["pruned"] == 1
    assert sorted((r.run_id, r.state) for r in bench.rows()) == [("live", VolumeState.ACTIVE),
                                                                 ("young", VolumeState.DELETED)]
    with bench.engine.connect() as conn:
        assert reclaim_counts.read(conn) == {"run_succeeded": 2}  # the pruned row is still counted
