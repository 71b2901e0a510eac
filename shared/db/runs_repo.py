"""Reads of the orchestrator's runs table (never written)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from shared.db.schema import runs_table
from shared.settings import RunsTable
from shared.volumes import RunId


@dataclass(frozen=True)
class RunState:
    """A run as the orchestrator last recorded it."""

    state: str | None
    end_date: dt.datetime | None


def run_states(conn: sa.Connection, config: RunsTable, runs: Iterable[RunId]) -> dict[RunId, RunState]:
    """The state and end date of each run that exists; absent runs are absent from the result."""
    wanted = list({(r.dag_id, r.run_id) for r in runs})
    if not wanted:
        return {}
    table = runs_table(config)
    query = sa.select(table.c.dag_id, table.c.run_id, table.c.state, table.c.end_date).where(
        sa.tuple_(table.c.dag_id, table.c.run_id).in_(wanted))
    out: dict[RunId, RunState] = {}
    for row in conn.execute(query):
        end = row.end_date
        if isinstance(end, dt.datetime) and end.tzinfo is None:
            end = end.replace(tzinfo=dt.UTC)
        out[RunId(row.dag_id, row.run_id)] = RunState(row.state, end)
    return out
