"""The inventory operators graph and alert on, read from the database in one short transaction.

A handful of aggregate statements per read (never one per series): live volumes grouped by state,
namespace, class and size (with their holds); failed runs' kept volumes; reclaims by reason from
``staging_reclaim_counts`` (one row per reason: the cost does not grow with the audit's history).
Every replica reads the same source of truth, so every replica reports the same numbers.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import exc

from shared.db import reclaim_counts
from shared.db.engine import translate_errors
from shared.db.runs_repo import end_date_utc
from shared.db.schema import LIVE, runs_table, staging_volumes
from shared.db.sweeps_repo import read_health
from shared.quantity import QuantityError, parse_quantity
from shared.settings import RunsTable
from shared.sweeps import GcHealth
from shared.volumes import VolumeState

T = staging_volumes


@dataclass(frozen=True)
class VolumeGroup:
    """Live volumes sharing a state, namespace and StorageClass."""

    state: str
    namespace: str
    storage_class: str
    count: int
    requested_bytes: float


@dataclass(frozen=True)
class Inventory:
    """What the database says now (plain data; the webhook exports it, the CLI prints it)."""

    groups: tuple[VolumeGroup, ...]
    failed_kept: int | None  # active volumes whose run failed (TTL running, or due); None: runs table unreadable
    oldest_failed_end: dt.datetime | None  # the end date of the oldest such run
    read_at: dt.datetime  # when the database was read (the ages here are measured from then)
    reclaims: dict[str, int] = field(default_factory=dict)  # reclaims by delete_reason, all time
    reclaimed_bytes: dict[str, int] = field(default_factory=dict)  # shared-claim directories' bytes freed, by reason
    oldest_reclaim_started: dt.datetime | None = None  # of the rows still reclaiming
    held: int = 0  # live volumes a hold keeps now
    oldest_hold_set: dt.datetime | None = None  # when the oldest of those holds was set

    def oldest_hold_seconds(self) -> float:
        if self.oldest_hold_set is None:
            return 0.0
        return max(0.0, (self.read_at - self.oldest_hold_set).total_seconds())

    def oldest_reclaiming_seconds(self) -> float:
        if self.oldest_reclaim_started is None:
            return 0.0
        return max(0.0, (self.read_at - self.oldest_reclaim_started).total_seconds())

    def oldest_failed_kept_seconds(self) -> float:
        if self.oldest_failed_end is None:
            return 0.0
        return max(0.0, (self.read_at - self.oldest_failed_end).total_seconds())

    def requested_bytes(self) -> dict[tuple[str, str], float]:
        """Live requested bytes by (namespace, storage_class)."""
        out: dict[tuple[str, str], float] = defaultdict(float)
        for g in self.groups:
            out[(g.namespace, g.storage_class)] += g.requested_bytes
        return dict(out)

    def volumes_by_state(self) -> dict[str, int]:
        out: dict[str, int] = {s.value: 0 for s in VolumeState if s is not VolumeState.DELETED}
        for g in self.groups:
            out[g.state] = out.get(g.state, 0) + g.count
        return out


def _bytes(size: str) -> float:
    try:
        return float(parse_quantity(size))
    except QuantityError:
        return 0.0  # an adopted claim without a size request claims nothing we can count


def read_inventory(conn: sa.Connection, runs: RunsTable, *, now: dt.datetime) -> Inventory:
    """The inventory in three aggregate statements (sizes are text quantities: summed here)."""
    held = T.c.held_until > now
    # A shared-claim directory requests nothing of its own (its row records the shared claim's size).
    size = sa.case((T.c.shared_claim.is_not(None), sa.literal("")), else_=T.c.size).label("size")
    grouped = conn.execute(
        sa.select(T.c.state, T.c.namespace, T.c.storage_class, size, sa.func.count().label("n"),
                  sa.func.min(T.c.reclaim_started_at).label("reclaim_started"),
                  sa.func.count().filter(held).label("held"),
                  sa.func.min(T.c.held_at).filter(held).label("held_at"))
        .where(LIVE).group_by(T.c.state, T.c.namespace, T.c.storage_class, size)
    ).all()
    hold_times = [row.held_at for row in grouped if row.held and row.held_at is not None]
    counts: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    reclaiming = [row.reclaim_started for row in grouped if row.state == VolumeState.RECLAIMING.value
                  and row.reclaim_started is not None]
    for row in grouped:
        acc = counts[(row.state, row.namespace, row.storage_class)]
        acc[0] += row.n
        acc[1] += row.n * _bytes(row.size)
    groups = tuple(VolumeGroup(state=k[0], namespace=k[1], storage_class=k[2], count=int(v[0]),
                               requested_bytes=v[1]) for k, v in sorted(counts.items()))
    run = runs_table(runs)
    failed_kept, oldest = None, None
    try:  # the orchestrator's table may be elsewhere or not granted: the rest still counts
        with conn.begin_nested():
            failed = conn.execute(
                sa.select(sa.func.count().label("n"), sa.func.min(run.c.end_date).label("oldest"))
                .select_from(T.join(run, sa.and_(run.c.dag_id == T.c.dag_id, run.c.run_id == T.c.run_id)))
                .where(T.c.state == VolumeState.ACTIVE.value, run.c.state.in_(runs.failed_states))
            ).one()
        failed_kept, oldest = int(failed.n or 0), end_date_utc(failed.oldest)
    except (exc.ProgrammingError, exc.OperationalError):
        pass
    reclaims, freed = reclaim_counts.read_with_bytes(conn)
    return Inventory(groups=groups, failed_kept=failed_kept, oldest_failed_end=oldest,
                     reclaims=reclaims, reclaimed_bytes=freed, read_at=now,
                     oldest_reclaim_started=min(reclaiming, default=None),
                     held=sum(int(row.held) for row in grouped), oldest_hold_set=min(hold_times, default=None))


def load_inventory(engine: sa.Engine, runs: RunsTable, *, now: dt.datetime) -> Inventory:
    """``read_inventory`` in its own read transaction; driver failures become ``DatabaseUnavailable``."""
    with translate_errors("reading the inventory"), engine.connect() as conn:
        return read_inventory(conn, runs, now=now)


@dataclass(frozen=True)
class Snapshot:
    """The inventory and the GC's health, read together."""

    inventory: Inventory
    gc: GcHealth


def load_snapshot(engine: sa.Engine, runs: RunsTable, *, now: dt.datetime) -> Snapshot:
    """Inventory and GC health on one connection: five aggregate statements, whatever the row count."""
    with translate_errors("reading the inventory"), engine.connect() as conn:
        return Snapshot(inventory=read_inventory(conn, runs, now=now), gc=read_health(conn))
