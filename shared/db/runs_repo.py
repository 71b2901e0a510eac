"""Reads of the orchestrator's runs table (never written)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.db.schema import runs_table, staging_volumes
from shared.errors import StagingError
from shared.settings import RunsTable
from shared.volumes import DeleteReason, RunId, RunState


def run_states(conn: sa.Connection, config: RunsTable, runs: Iterable[RunId]) -> dict[RunId, RunState]:
    """The state and end date of each run that exists; absent runs are absent from the result."""
    wanted = list({(r.dag_id, r.run_id) for r in runs})
    if not wanted:
        return {}
    table = runs_table(config)
    columns = (table.c.dag_id, table.c.run_id, table.c.state, table.c.end_date)
    # Join against unnest(arrays): one index lookup per pair. A row-value IN list of hundreds
    # of pairs makes PostgreSQL scan the whole runs table for every batch.
    text_array = postgresql.ARRAY(sa.String)
    wanted_t = sa.func.unnest(sa.bindparam("dags", type_=text_array), sa.bindparam("runs", type_=text_array)
                              ).table_valued("d", "r").render_derived(name="wanted")
    query = sa.select(*columns).join_from(
        table, wanted_t, sa.and_(table.c.dag_id == wanted_t.c.d, table.c.run_id == wanted_t.c.r))
    rows = conn.execute(query, {"dags": [d for d, _ in wanted], "runs": [r for _, r in wanted]})
    return {RunId(row.dag_id, row.run_id): _run_state(row) for row in rows}


def end_date_utc(value: Any) -> Any:
    """An end date of the orchestrator's runs table as an aware datetime. That table is not ours: its
    ``end_date`` may be ``timestamp without time zone``, which the driver returns naive; a naive end date
    means UTC (contracts 4; ``make_engine`` sets the session's TimeZone to UTC so SQL reads it the same)."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _run_state(row: Any) -> RunState:
    return RunState(row.state, end_date_utc(row.end_date))


def _match(table: sa.Table, dag_id: Any, run_id: Any) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.dag_id == dag_id, table.c.run_id == run_id)


def reclaimable_condition(config: RunsTable, reason: DeleteReason, *, now: dt.datetime,
                          failed_ttl: dt.timedelta) -> sa.ColumnElement[bool]:
    """SQL that is true, for the ``staging_volumes`` row being updated, exactly when its run
    still allows reclaiming for ``reason`` at this moment (evaluated inside the UPDATE)."""
    table = runs_table(config)
    sv = staging_volumes
    same_run = _match(table, sv.c.dag_id, sv.c.run_id)
    if reason is DeleteReason.ORPHANED:
        return ~sa.exists().where(same_run)
    if reason is DeleteReason.RUN_SUCCEEDED:
        return sa.exists().where(same_run, table.c.state.in_(config.success_states))
    if reason is DeleteReason.TTL_EXPIRED:
        return sa.exists().where(same_run, table.c.state.in_(config.failed_states),
                                 table.c.end_date.is_not(None), table.c.end_date <= now - failed_ttl)
    if reason is DeleteReason.OPERATOR_REQUEST:  # the run has ended (success or failed) or is gone
        ended = (*config.success_states, *config.failed_states)
        return sa.or_(~sa.exists().where(same_run), sa.exists().where(same_run, table.c.state.in_(ended)))
    raise ValueError(f"{reason} is not a reason to reclaim")


def can_lock_runs(conn: sa.Connection, config: RunsTable) -> bool:
    """Whether this role may take row locks on the runs table (PostgreSQL wants UPDATE privilege
    for SELECT ... FOR SHARE, though nothing is written)."""
    return bool(conn.execute(sa.text("SELECT has_table_privilege(current_user, :t, 'UPDATE')"),
                             {"t": config.table}).scalar())


def read_run_locked(conn: sa.Connection, config: RunsTable, run: RunId, *, lock: bool = True) -> RunState | None:
    """The run as committed now (None when absent). With ``lock`` (PostgreSQL), a share lock on the
    run's row is held until the caller's transaction ends: the orchestrator cannot change the run's
    state between this read and the PVC delete that follows it in the same transaction."""
    table = runs_table(config)
    query = sa.select(table.c.state, table.c.end_date).where(_match(table, run.dag_id, run.run_id))
    if lock:
        query = query.with_for_update(read=True)
    row = conn.execute(query).first()
    return _run_state(row) if row else None


class RunsTableError(StagingError):
    """The configured runs table or one of its columns cannot be read."""


def check_readable(conn: sa.Connection, config: RunsTable) -> None:
    """Raise ``RunsTableError`` naming the table and columns when the runs table cannot be read."""
    table = runs_table(config)
    try:
        conn.execute(sa.select(table.c.dag_id, table.c.run_id, table.c.state, table.c.end_date).limit(0))
    except sa.exc.ProgrammingError as exc:
        conn.rollback()
        raise RunsTableError(
            f"cannot read the runs table {config.table!r} (columns {config.dag_id_column}, {config.run_id_column}, "
            f"{config.state_column}, {config.end_date_column}): {str(exc.orig).splitlines()[0]}") from exc


def read_runs_locked(conn: sa.Connection, config: RunsTable, runs: Iterable[RunId], *,
                     lock: bool = True) -> dict[RunId, RunState]:
    """``read_run_locked`` for many runs in one statement: the runs as committed now (absent runs absent),
    each row share-locked until the caller's transaction ends (PostgreSQL, with ``lock``). Rows are locked
    in key order, so two such readers never wait on each other in a cycle."""
    wanted = sorted({(r.dag_id, r.run_id) for r in runs})
    if not wanted:
        return {}
    table = runs_table(config)
    text_array = postgresql.ARRAY(sa.String)
    wanted_t = sa.func.unnest(sa.bindparam("dags", type_=text_array), sa.bindparam("runs", type_=text_array)
                              ).table_valued("d", "r").render_derived(name="wanted")
    query = (sa.select(table.c.dag_id, table.c.run_id, table.c.state, table.c.end_date)
             .join_from(table, wanted_t, sa.and_(table.c.dag_id == wanted_t.c.d, table.c.run_id == wanted_t.c.r))
             .order_by(table.c.dag_id, table.c.run_id))
    if lock:
        query = query.with_for_update(read=True, of=table)
    rows = conn.execute(query, {"dags": [d for d, _ in wanted], "runs": [r for _, r in wanted]})
    return {RunId(row.dag_id, row.run_id): _run_state(row) for row in rows}
