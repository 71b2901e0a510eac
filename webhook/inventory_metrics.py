"""A Prometheus collector for the database's inventory and the GC's health, on the webhook's /metrics.

The database is read at most once per ``ttl`` seconds per worker (concurrent scrapes share one read);
a failed read is cached too, so a database that is down costs one bounded attempt per ``ttl`` and
/metrics still answers: ``leoflow_staging_inventory_up`` says 0 and the inventory series are absent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.db.inventory import Inventory, Snapshot
from shared.errors import StagingError
from shared.sweeps import OUTCOMES, GcHealth

log = logging.getLogger("leoflow_staging.webhook")

Metric = GaugeMetricFamily | CounterMetricFamily


@dataclass
class _Cached:
    at: float
    value: object | None
    error: str | None


class CachedRead:
    """One read per ``ttl`` seconds shared by every caller; errors cached the same way."""

    def __init__(self, read: Callable[[], object], *, ttl: float, clock: Callable[[], float] = time.monotonic,
                 what: str) -> None:
        self._read, self._ttl, self._clock, self._what = read, ttl, clock, what
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def get(self) -> tuple[object | None, str | None]:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached.at >= self._ttl:
                try:
                    self._cached = _Cached(now, self._read(), None)
                except StagingError as exc:
                    log.warning("%s failed: %s", self._what, exc, extra={"fields": {
                        "event": "metrics_read_failed", "what": self._what, "detail": str(exc)}})
                    self._cached = _Cached(now, None, str(exc))
                except Exception as exc:  # a scrape never fails because of the database
                    log.exception("%s failed", self._what)
                    self._cached = _Cached(now, None, f"{type(exc).__name__}: {exc}")
            return self._cached.value, self._cached.error


def inventory_metrics(inv: Inventory) -> list[Metric]:
    """The inventory as metric families (pure)."""
    volumes = GaugeMetricFamily("leoflow_staging_volumes",
                                "Live staging volumes (database rows not deleted) by state, namespace and class.",
                                labels=["state", "namespace", "storage_class"])
    for g in inv.groups:
        volumes.add_metric([g.state, g.namespace, g.storage_class], g.count)
    requested = GaugeMetricFamily("leoflow_staging_requested_bytes",
                                  "Storage requested by live staging volumes, in bytes, by namespace and class.",
                                  labels=["namespace", "storage_class"])
    for (namespace, storage_class), value in sorted(inv.requested_bytes().items()):
        requested.add_metric([namespace, storage_class], value)
    runs_up = GaugeMetricFamily("leoflow_staging_runs_table_up",
                                "1 when the orchestrator's runs table could be read for the failed-run series.",
                                value=0 if inv.failed_kept is None else 1)
    kept: list[Metric] = []
    if inv.failed_kept is not None:
        kept.append(GaugeMetricFamily(
            "leoflow_staging_failed_kept_volumes",
            "Active volumes whose run failed: kept for the failed-run TTL (or due for a reclaim).",
            value=inv.failed_kept))
        kept.append(GaugeMetricFamily("leoflow_staging_oldest_failed_kept_seconds",
                                      "Seconds since the oldest kept failed run ended (0 when none is kept).",
                                      value=inv.oldest_failed_kept_seconds()))
    reclaims = CounterMetricFamily("leoflow_staging_reclaims",
                                   "Reclaimed volumes by delete reason, all time (pruning old audit rows never "
                                   "lowers it).", labels=["reason"])
    for reason, n in sorted(inv.reclaims.items()):
        reclaims.add_metric([reason], n)
    freed = CounterMetricFamily("leoflow_staging_reclaimed_bytes",
                                "Bytes the GC freed by removing shared-claim directories (what each held when it "
                                "was removed), by delete reason, all time.", labels=["reason"])
    for reason, n in sorted(inv.reclaimed_bytes.items()):
        freed.add_metric([reason], n)
    held = GaugeMetricFamily("leoflow_staging_held_volumes",
                             "Live volumes kept by a hold (`leoflow-staging hold`) that has not ended.",
                             value=inv.held)
    oldest_hold = GaugeMetricFamily("leoflow_staging_oldest_hold_seconds",
                                    "Seconds since the oldest hold still in force was set (0 when none is).",
                                    value=inv.oldest_hold_seconds())
    return [volumes, requested, runs_up, *kept, reclaims, freed, held, oldest_hold]


def gc_metrics(health: GcHealth) -> list[Metric]:
    """The GC's health from its sweep records (pure)."""
    last = health.last_success
    success = GaugeMetricFamily(
        "leoflow_staging_gc_last_success_timestamp_seconds",
        "Unix time the newest completed GC sweep finished (0 when none is recorded).",
        value=last.finished_at.timestamp() if last else 0)
    duration = GaugeMetricFamily("leoflow_staging_gc_last_sweep_duration_seconds",
                                 "Duration of the newest completed GC sweep.",
                                 value=last.duration_seconds if last else 0)
    results = GaugeMetricFamily("leoflow_staging_gc_last_sweep_results",
                                "Items of the newest completed GC sweep, by outcome.", labels=["outcome"])
    for outcome in OUTCOMES:
        results.add_metric([outcome], last.counts.get(outcome, 0) if last else 0)
    skipped = GaugeMetricFamily(
        "leoflow_staging_gc_skipped_sweeps",
        "GC sweeps skipped since the newest completed one (another sweep held the single-flight lock).",
        value=health.skipped_since_success)
    return [success, duration, results, skipped]


def snapshot_metrics(snap: Snapshot) -> list[Metric]:
    reclaiming = GaugeMetricFamily(
        "leoflow_staging_oldest_reclaiming_seconds",
        "Seconds since the oldest reclaim still in progress started (0 when none is).",
        value=snap.inventory.oldest_reclaiming_seconds())
    return [*inventory_metrics(snap.inventory), reclaiming, *gc_metrics(snap.gc)]


class InventoryCollector(Collector):
    """Exports the inventory and the GC's health from a cached database read."""

    def __init__(self, snapshot: CachedRead) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # nothing is read at registration

    def collect(self) -> Iterator[Metric]:
        snap, error = self._snapshot.get()
        yield GaugeMetricFamily("leoflow_staging_inventory_up",
                                "1 when the last inventory read from the database succeeded, 0 when it failed.",
                                value=1 if error is None else 0)
        if isinstance(snap, Snapshot):
            yield from snapshot_metrics(snap)


__all__ = ["CachedRead", "InventoryCollector", "gc_metrics", "inventory_metrics", "snapshot_metrics"]
