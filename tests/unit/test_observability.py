"""Pure parts of the observability: event content, sweep records, the summary text, metric families."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from gc_job import health
from leoflow_staging.summary import as_dict, lines
from shared import claim_events
from shared.db.inventory import Inventory, Snapshot, VolumeGroup
from shared.sweeps import GcHealth, SweepRecord, SweepStatus
from webhook.inventory_metrics import CachedRead, snapshot_metrics

T0 = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)


def test_gc_lines_become_events_and_others_do_not() -> None:
    base = {"namespace": "ns", "pvc": "p", "dag_id": "etl", "run_id": "r1", "run_state": "success",
            "reason": "run_succeeded"}
    [started] = claim_events.from_gc(base | {"event": "reclaimed", "detail": "PVC gone; row deleted"})
    assert (started.reason, started.action, started.type) == ("ReclaimStarted", "Reclaim", "Normal")
    assert "reason run_succeeded" in started.note
    held = claim_events.from_gc(base | {"event": "terminating",
                                        "detail": "Terminating, held by pod(s) a (Running)"})
    assert [e.reason for e in held] == ["ReclaimStarted", "ReclaimHeld"] and held[1].type == "Warning"
    [kept] = claim_events.from_gc(base | {"event": "kept_failed_run", "run_end": T0.isoformat(), "why": "w"})
    assert f"failed at {T0.isoformat()}" in kept.note
    for quiet in ("sweep_summary", "sweep_skipped", "stray_pvc", "adopted"):
        assert claim_events.from_gc(base | {"event": quiet}) == []
    assert claim_events.from_gc({"event": "reclaimed"}) == []  # no claim named
    assert started.pvc_uid is None  # the recorder reads the claim for its uid
    with_uid = claim_events.from_gc(base | {"event": "terminating", "pvc_uid": "u-1",
                                            "detail": "Terminating, held by pod(s) a (Running)"})
    assert [e.pvc_uid for e in with_uid] == ["u-1", "u-1"]  # the line's uid: no read needed


def test_the_same_fact_has_the_same_name_and_a_new_fact_another() -> None:
    line = {"event": "kept_failed_run", "namespace": "ns", "pvc": "p", "dag_id": "d", "run_id": "r",
            "run_end": T0.isoformat(), "why": "kept until x"}
    first, again = claim_events.from_gc(line)[0], claim_events.from_gc(line | {"why": "kept until y"})[0]
    assert first.name == again.name  # the same failed run: told once
    later = claim_events.from_gc(line | {"run_end": (T0 + dt.timedelta(hours=1)).isoformat()})[0]
    assert later.name != first.name  # the run failed again after a re-run: a new fact


@given(st.text(min_size=0, max_size=3000))
def test_notes_fit_the_api_limit(text: str) -> None:
    event = claim_events.created(namespace="ns", pvc_name="leoflow-staging-x", pvc_uid="u", dag_id=text,
                                 run_id=text, pod="p", storage_class="c", size="1Gi")
    body = claim_events.manifest(event, instance="i" * 300, now_iso="2026-11-28T12:00:00.000000Z")
    assert len(body["note"]) <= 1000 and len(body["reportingInstance"]) <= 128
    assert body["regarding"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
                                 "name": "leoflow-staging-x", "uid": "u"}
    assert len(body["metadata"]["name"]) <= 253


def test_a_sweep_record_takes_the_summary_counts() -> None:
    summary = {"event": "sweep_summary", "reclaimed": {"ttl_expired": 2}, "reclaimed_total": 2, "kept": 5,
               "terminating": 1, "aborted": 0, "adopted": 1, "healed": 0, "failed": 3, "duration_s": 1.25}
    rec = health.completed(summary, started_at=T0, finished_at=T0 + dt.timedelta(seconds=2))
    assert rec.status is SweepStatus.COMPLETED and rec.duration_seconds == 1.25
    assert rec.counts == {"reclaimed": 2, "terminating": 1, "kept": 5, "aborted": 0, "adopted": 1, "healed": 0,
                          "failed": 3}


def _snapshot(*, failed_kept: int | None = 1, last: SweepRecord | None = None) -> Snapshot:
    inv = Inventory(groups=(VolumeGroup("active", "a", "nfs", 2, 2 * 2**30),
                            VolumeGroup("reclaiming", "a", "nfs", 1, 2**30)),
                    failed_kept=failed_kept, oldest_failed_end=T0 - dt.timedelta(hours=3),
                    read_at=T0, reclaims={"ttl_expired": 4}, oldest_reclaim_started=T0 - dt.timedelta(minutes=40))
    return Snapshot(inv, GcHealth(last_success=last, skipped_since_success=2, last_skipped_at=T0))


def test_summary_text_and_json() -> None:
    last = SweepRecord(T0 - dt.timedelta(minutes=5), T0 - dt.timedelta(minutes=5), SweepStatus.COMPLETED, 0.5,
                       {"reclaimed": 1, "kept": 2})
    text = "\n".join(lines(_snapshot(last=last)))
    assert "live:       2 active, 1 reclaiming; 3Gi requested" in text
    assert "failed-run kept: 1 (oldest run ended 3h00m ago)" in text
    assert "reclaiming: oldest started 40m ago" in text
    assert "last completed sweep: 2026-11-28 11:55:00 UTC (5m ago), took 0.5s" in text
    assert "skipped sweeps since: 2" in text
    assert "never recorded" in "\n".join(lines(_snapshot()))
    assert "unknown (the runs table cannot be read)" in "\n".join(lines(_snapshot(failed_kept=None)))
    data = as_dict(_snapshot(last=last))
    assert data["volumes"] == {"active": 2, "reclaiming": 1} and data["gc"]["last_success_age_seconds"] == 300


def test_metric_families() -> None:
    fams = {f.name: f for f in snapshot_metrics(_snapshot())}
    assert fams["leoflow_staging_oldest_reclaiming_seconds"].samples[0].value == 2400
    assert fams["leoflow_staging_gc_last_success_timestamp_seconds"].samples[0].value == 0
    assert fams["leoflow_staging_runs_table_up"].samples[0].value == 1
    gone = {f.name for f in snapshot_metrics(_snapshot(failed_kept=None))}
    assert "leoflow_staging_failed_kept_volumes" not in gone and "leoflow_staging_volumes" in gone


def test_cached_read_shares_one_read_and_caches_failures() -> None:
    calls, now = [], [0.0]

    def read() -> object:
        calls.append(now[0])
        if len(calls) == 2:
            raise RuntimeError("boom")
        return len(calls)

    cached = CachedRead(read, ttl=5, clock=lambda: now[0], what="t")
    assert cached.get() == (1, None) and cached.get() == (1, None)
    now[0] = 5
    assert cached.get() == (None, "RuntimeError: boom")
    now[0] = 9
    assert cached.get() == (None, "RuntimeError: boom") and len(calls) == 2
    now[0] = 10
    assert cached.get() == (3, None)
