"""The orchestrator's side of the database, as Leoflow writes it: its runs table (tests, demo, bench)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

DDL = """
CREATE TABLE IF NOT EXISTS dag_run (
    id SERIAL PRIMARY KEY,
    dag_id VARCHAR(250) NOT NULL,
    run_id VARCHAR(250) NOT NULL,
    state VARCHAR(50),
    end_date TIMESTAMP WITH TIME ZONE,
    UNIQUE (dag_id, run_id)
)
"""


def create_runs_table(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(DDL))


def set_run(engine: sa.Engine, dag_id: str, run_id: str, state: str, end_date: dt.datetime | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO dag_run (dag_id, run_id, state, end_date) VALUES (:d, :r, :s, :e) "
            "ON CONFLICT (dag_id, run_id) DO UPDATE SET state = :s, end_date = :e"),
            {"d": dag_id, "r": run_id, "s": state, "e": end_date})


def delete_run(engine: sa.Engine, dag_id: str, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM dag_run WHERE dag_id = :d AND run_id = :r"), {"d": dag_id, "r": run_id})
