"""`hold`, `release` and `reclaim` against the GC, on the real apiserver and PostgreSQL: the commands run as the
console script an operator runs; the GC is the real sweep. A held succeeded run is kept until its hold expires;
a released run is reclaimed by the next sweep; `reclaim` frees a failed run's volume at once with reason
`operator_request` (rows, `volumes`, metrics) and refuses a running run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from shared.db import reclaim_counts
from shared.db.inventory import load_snapshot
from shared.settings import RunsTable
from shared.volumes import DeleteReason, VolumeState
from tests.e2e.gc_support import Bench
from tests.support.orchestrator import set_run
from tests.support.webhook import console_script
from webhook import metrics
from webhook.inventory_metrics import CachedRead, InventoryCollector

pytestmark = pytest.mark.e2e
H = dt.timedelta(hours=1)


def _cli(bench: Bench, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update(LEOFLOW_STAGING_DATABASE_URL=bench.engine.url.render_as_string(hide_password=False),
               LEOFLOW_STAGING_KUBECONFIG=str(kubeconfig), LEOFLOW_STAGING_INSTANCE=bench.kube.instance,
               LEOFLOW_STAGING_GC_SETTLE_SECONDS="20")
    return subprocess.run([console_script(), *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False, stdin=subprocess.DEVNULL)


def _lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)  # type: ignore[attr-defined]
            and r.fields.get("event") == event]  # type: ignore[attr-defined]


def _claims(core: client.CoreV1Api, namespace: str) -> list[str]:
    return [str(c.metadata.name) for c in core.list_namespaced_persistent_volume_claim(namespace).items]


def test_a_held_succeeded_run_is_kept_until_the_hold_expires(bench: Bench, core: client.CoreV1Api,
                                                             kubeconfig: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    pvc = bench.admit("etl", "ok")
    set_run(bench.engine, "etl", "ok", "running")  # a hold can be set while the run still runs
    held = _cli(bench, kubeconfig, "hold", "etl", "ok", "--for", "2h", "--reason", "keep the outputs")
    assert held.returncode == 0, held.stderr
    [row] = bench.rows()
    assert row.held_until is not None and row.hold_reason == "keep the outputs"
    set_run(bench.engine, "etl", "ok", "success", row.held_until - 2 * H)
    bench.now = row.held_until - dt.timedelta(seconds=1)  # the run succeeded; the hold still holds
    assert bench.sweep() == 0
    assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE] and _claims(core, bench.namespace) == [pvc]
    [kept] = _lines(caplog, "kept_held")
    assert (kept["pvc"], kept["held_until"], kept["hold_reason"]) == (pvc, row.held_until.isoformat(),
                                                                      "keep the outputs")
    assert kept["why"].startswith(f"held until {row.held_until.isoformat()} by ") and "@" in kept["held_by"]
    snap = load_snapshot(bench.engine, RunsTable(), now=bench.now)
    assert (snap.inventory.held, snap.inventory.oldest_hold_seconds()) == (1, (bench.now - row.held_at).total_seconds())
    bench.now = row.held_until  # the hold has ended: the lifecycle rule applies again
    assert bench.sweep() == 0
    [row] = bench.rows()
    assert (row.state, row.delete_reason) == (VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)
    assert _claims(core, bench.namespace) == []


def test_release_then_reclaim_frees_a_failed_run_at_once_with_its_own_reason(
        bench: Bench, core: client.CoreV1Api, kubeconfig: Path) -> None:
    pvc = bench.admit("etl", "bad")
    now = dt.datetime.now(dt.UTC)
    set_run(bench.engine, "etl", "bad", "failed", now - H)  # inside its 24 h TTL
    assert _cli(bench, kubeconfig, "hold", "etl", "bad", "--for", "72h").returncode == 0
    refused = _cli(bench, kubeconfig, "reclaim", "etl", "bad", "--yes")
    assert refused.returncode == 1 and "release the hold first" in refused.stderr
    bench.now = now + 3 * H
    bench.sweep()  # held (and inside the TTL): kept
    assert _claims(core, bench.namespace) == [pvc]
    released = _cli(bench, kubeconfig, "release", "etl", "bad")
    assert released.returncode == 0 and "hold released" in released.stdout
    bench.sweep()  # released, but the failed run's TTL still runs: kept
    assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE]

    done = _cli(bench, kubeconfig, "reclaim", "etl", "bad", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{bench.namespace}/{pvc} (run 'bad' of DAG 'etl'): reclaimed (operator_request)"
    assert _claims(core, bench.namespace) == []
    [row] = bench.rows()
    assert (row.state, row.delete_reason) == (VolumeState.DELETED, DeleteReason.OPERATOR_REQUEST)
    assert row.deleted_at is not None and row.deleted_at >= now
    table = _cli(bench, kubeconfig, "volumes", "--run", "bad").stdout.splitlines()
    assert table[1].split()[4:5] == ["deleted"] and "operator_request" in table[1].split()
    listed = _cli(bench, kubeconfig, "volumes", "--json", "--run", "bad").stdout.splitlines()
    [as_json] = [json.loads(x) for x in listed]
    assert as_json["delete_reason"] == "operator_request"
    with bench.engine.connect() as conn:
        assert reclaim_counts.read(conn) == {"operator_request": 1}
    collector = InventoryCollector(CachedRead(lambda: load_snapshot(bench.engine, RunsTable(), now=now), ttl=0,
                                              what="inventory read"))
    fams = {f.name: [(s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(metrics.render(None, collector)[0].decode())}
    assert fams["leoflow_staging_reclaims"] == [({"reason": "operator_request"}, 1.0)]
    assert fams["leoflow_staging_held_volumes"] == [({}, 0.0)]
    again = _cli(bench, kubeconfig, "reclaim", "etl", "bad", "--yes")
    assert again.returncode == 2 and "was already reclaimed at" in again.stderr and "(operator_request)" in again.stderr


def test_reclaim_refuses_a_running_run_and_a_gone_run_is_reclaimed(bench: Bench, core: client.CoreV1Api,
                                                                   kubeconfig: Path) -> None:
    running = bench.admit("etl", "busy")
    for state in ("queued", "running"):
        set_run(bench.engine, "etl", "busy", state)
        refused = _cli(bench, kubeconfig, "reclaim", "etl", "busy", "--yes")
        assert refused.returncode == 1 and f"run is {state}" in refused.stderr, refused
    assert _claims(core, bench.namespace) == [running]
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.ACTIVE, None)]
    gone = bench.admit("etl", "deleted-run")  # never in the runs table (e.g. `airflow db clean`)
    done = _cli(bench, kubeconfig, "reclaim", "etl", "deleted-run", "--yes")
    assert done.returncode == 0 and "reclaimed (operator_request)" in done.stdout, done
    assert _claims(core, bench.namespace) == [running] and gone not in _claims(core, bench.namespace)
