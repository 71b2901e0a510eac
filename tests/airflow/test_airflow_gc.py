"""The GC reading Airflow 3's own ``dag_run`` (the default runs table), with run states changed by Airflow's own
code: trigger, the scheduler's set_state, ``clear_task_instances``, mark success/failed, ``airflow db clean``.
The GC runs as the real ``leoflow-staging gc`` process, as a database role with only the documented grants."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.postgres import Postgres
from shared.naming import pvc_name
from tests.airflow.conftest import UNICODE_DAG
from tests.support.airflow import Airflow
from tests.support.webhook import WebhookProcess, console_script

pytestmark = [pytest.mark.e2e, pytest.mark.db]

GC_ROLE = "leoflow_staging_gc"


def _run(hour: int) -> str:
    return f"manual__2026-11-29T{hour:02d}:00:00+00:00"


# name -> (dag_id, run_id, Airflow's steps after the trigger)
RUNS: dict[str, tuple[str, str, list[str]]] = {
    "succeeded": ("staging_etl", _run(1), ["running", "success"]),
    "failed": ("staging_etl", _run(2), ["running", "failed"]),
    "cleared": ("staging_etl", _run(3), ["running", "create_task_instances", "failed", "clear"]),
    "marked_success": ("staging_etl", _run(4), ["running", "create_task_instances", "mark_success"]),
    "marked_failed": ("staging_etl", _run(5), ["running", "create_task_instances", "mark_failed"]),
    "flipped": ("staging_etl", _run(6), ["running", "create_task_instances", "mark_failed", "mark_success"]),
    "unflipped": ("staging_etl", _run(10), ["running", "create_task_instances", "success", "mark_failed"]),
    "unicode": (UNICODE_DAG, _run(7), ["running", "success"]),
    "cleaned": ("staging_clean", _run(8), ["running", "failed"]),
    "latest": ("staging_clean", _run(9), []),  # queued, never started: `db clean` keeps it
}


def _gc_database_url(postgres: Postgres, airflow: Airflow) -> str:
    """A role with the grants docs/airflow.md lists: SELECT on dag_run, nothing else of Airflow's."""
    engine = sa.create_engine(airflow.database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": GC_ROLE}).first()
            if not exists:
                conn.execute(sa.text(f"CREATE ROLE {GC_ROLE} LOGIN"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON staging_volumes TO {GC_ROLE}"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE ON staging_reclaim_counts TO {GC_ROLE}"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT, DELETE ON gc_sweeps TO {GC_ROLE}"))
            conn.execute(sa.text(f"GRANT USAGE ON SEQUENCE staging_volumes_id_seq, gc_sweeps_id_seq TO {GC_ROLE}"))
            conn.execute(sa.text(f"GRANT SELECT ON leoflow_staging_alembic_version TO {GC_ROLE}"))
            conn.execute(sa.text(f"GRANT SELECT ON dag_run TO {GC_ROLE}"))
    finally:
        engine.dispose()
    return airflow.database_url.replace(f"//{postgres.url().split('//')[1].split('@')[0]}@", f"//{GC_ROLE}@")


def _gc(database_url: str, kubeconfig: Path, failed_ttl: str) -> tuple[int, list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update({"LEOFLOW_STAGING_DATABASE_URL": database_url, "LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig),
                "LEOFLOW_STAGING_FAILED_TTL": failed_ttl, "LEOFLOW_STAGING_ADOPT_MIN_AGE": "0s",
                "LEOFLOW_STAGING_GC_SETTLE_SECONDS": "30"})
    done = subprocess.run([console_script(), "gc"], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    return done.returncode, lines


def _rows(airflow: Airflow, namespace: str) -> dict[tuple[str, str], dict[str, Any]]:
    engine = sa.create_engine(airflow.database_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text("SELECT * FROM staging_volumes WHERE namespace = :ns"), {"ns": namespace})
            return {(r.dag_id, r.run_id): dict(r._mapping) for r in result}
    finally:
        engine.dispose()


def _dag_runs(airflow: Airflow) -> dict[tuple[str, str], tuple[str | None, dt.datetime | None]]:
    engine = sa.create_engine(airflow.database_url)
    try:
        with engine.connect() as conn:
            return {(r.dag_id, r.run_id): (r.state, r.end_date)
                    for r in conn.execute(sa.text("SELECT dag_id, run_id, state, end_date FROM dag_run"))}
    finally:
        engine.dispose()


def _events(lines: list[dict[str, Any]], namespace: str) -> dict[str, dict[str, Any]]:
    return {line["pvc"]: line for line in lines if line.get("namespace") == namespace and "pvc" in line}


def test_gc_follows_airflows_own_run_states(
        airflow: Airflow, airflow_webhook: WebhookProcess, postgres: Postgres, kubeconfig: Path,
        core: client.CoreV1Api, airflow_namespace: str, pod_template: Path) -> None:
    ns = airflow_namespace
    # Airflow triggers the runs and dispatches a task of each: the webhook makes their claims.
    triggered = airflow.side("run-states", {"steps": [{"dag_id": d, "run_id": r, "action": "trigger"}
                                                      for d, r, _ in RUNS.values()]})
    pods = airflow.side("executor-pods", {
        "template_file": str(pod_template), "namespace": ns, "image": "apache/airflow:3.3.2",
        "tasks": [{"dag_id": d, "run_id": r, "task_id": "extract"} for d, r, _ in RUNS.values()]})
    for body in pods:
        core.create_namespaced_pod(ns, body)
    assert set(_rows(airflow, ns)) == {(d, r) for d, r, _ in RUNS.values()}

    # The runs move on, by Airflow's own code.
    answers = airflow.side("run-states", {"steps": [{"dag_id": d, "run_id": r, "action": a}
                                                    for d, r, steps in RUNS.values() for a in steps]})
    final = {(a["dag_id"], a["run_id"]): a for a in triggered + answers}
    states = {name: final[(d, r)]["state"] for name, (d, r, _) in RUNS.items()}
    assert states == {"succeeded": "success", "failed": "failed", "cleared": "queued",
                      "marked_success": "success", "marked_failed": "failed", "flipped": "success",
                      "unflipped": "failed",
                      "unicode": "success", "cleaned": "failed", "latest": "queued"}
    assert final[RUNS["cleared"][:2]]["end_date"] is None and final[RUNS["cleared"][:2]]["clear_number"] == 1
    # Marking a succeeded run failed keeps its end_date: the TTL counts from the first end.
    unflipped = [a for a in answers if (a["dag_id"], a["run_id"]) == RUNS["unflipped"][:2]]
    assert unflipped[-1]["end_date"] == unflipped[-2]["end_date"] is not None
    # `airflow db clean` removes the started runs of staging_clean before the timestamp (by start_date).
    output = airflow.cli("db", "clean", "--clean-before-timestamp", (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
                .isoformat(timespec="seconds"), "--tables", "dag_run", "--dag-ids", "staging_clean",
                "--skip-archive", "--yes")
    runs = _dag_runs(airflow)
    assert RUNS["cleaned"][:2] not in runs and RUNS["latest"][:2] in runs, output

    # Airflow deletes finished worker pods; the claims are then free to go.
    core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
    gc_url = _gc_database_url(postgres, airflow)
    code, lines = _gc(gc_url, kubeconfig, failed_ttl="1h")
    events = _events(lines, ns)
    assert code == 0, lines
    assert not [x for x in lines if x.get("event") == "sweep_not_recorded"], lines  # the grants suffice
    rows = _rows(airflow, ns)
    reasons = {name: (rows[(d, r)]["state"], rows[(d, r)]["delete_reason"]) for name, (d, r, _) in RUNS.items()}
    assert reasons == {
        "succeeded": ("deleted", "run_succeeded"), "marked_success": ("deleted", "run_succeeded"),
        "flipped": ("deleted", "run_succeeded"), "unicode": ("deleted", "run_succeeded"),
        "cleaned": ("deleted", "orphaned"),
        "failed": ("active", None), "marked_failed": ("active", None), "unflipped": ("active", None),
        "cleared": ("active", None), "latest": ("active", None)}
    failed_claim = pvc_name(*RUNS["failed"][:2])
    assert events[failed_claim]["event"] == "kept_failed_run", events.get(failed_claim)
    assert events[pvc_name(*RUNS["cleaned"][:2])]["reason"] == "orphaned"
    live = {p.metadata.name for p in core.list_namespaced_persistent_volume_claim(ns).items}
    assert live == {pvc_name(d, r) for name, (d, r, _) in RUNS.items() if reasons[name][0] == "active"}

    # Past the TTL (Airflow's own end_date), the failed runs' volumes go; the cleared and running ones stay.
    ended = max(runs[RUNS[n][:2]][1] or dt.datetime.min.replace(tzinfo=dt.UTC)
                for n in ("failed", "marked_failed", "unflipped"))
    time.sleep(max(0.0, (ended + dt.timedelta(seconds=2) - dt.datetime.now(dt.UTC)).total_seconds()))
    code, lines = _gc(gc_url, kubeconfig, failed_ttl="1s")
    assert code == 0, lines
    rows = _rows(airflow, ns)
    assert {n: rows[RUNS[n][:2]]["delete_reason"]
            for n in ("failed", "marked_failed", "unflipped", "cleared", "latest")} == {
        "failed": "ttl_expired", "marked_failed": "ttl_expired", "unflipped": "ttl_expired", "cleared": None,
        "latest": None}
    live = {p.metadata.name for p in core.list_namespaced_persistent_volume_claim(ns).items}
    assert live == {pvc_name(*RUNS["cleared"][:2]), pvc_name(*RUNS["latest"][:2])}
    assert _dag_runs(airflow) == runs  # nothing in Airflow's tables was written
