"""A Prometheus collector for the database's inventory and the GC's health, on the webhook's /metrics.

The database is read at most once per ``ttl`` seconds per worker (concurrent scrapes share one read);
a failed read is cached too, so a database that is down costs one bounded attempt per ``ttl`` and
/metrics still answers: ``leoflow_staging_inventory_up`` says 0 and the inventory series are absent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.db.inventory import Inventory
from shared.errors import StagingError

log = logging.getLogger("leoflow_staging.webhook")

Reader = Callable[[], Inventory]
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
    kept = GaugeMetricFamily("leoflow_staging_failed_kept_volumes",
                             "Active volumes whose run failed: kept for the failed-run TTL (or due for a reclaim).",
                             value=inv.failed_kept)
    oldest = GaugeMetricFamily("leoflow_staging_oldest_failed_kept_seconds",
                               "Seconds since the oldest kept failed run ended (0 when none is kept).",
                               value=inv.oldest_failed_kept_seconds())
    reclaims = CounterMetricFamily("leoflow_staging_reclaims",
                                   "Reclaimed volumes in the audit rows, by delete reason.", labels=["reason"])
    for reason, n in sorted(inv.reclaims.items()):
        reclaims.add_metric([reason], n)
    return [volumes, requested, kept, oldest, reclaims]


def _up(name: str, doc: str, ok: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=1 if ok else 0)


class InventoryCollector(Collector):
    """Exports the inventory (and, when given, the GC health) from cached database reads."""

    def __init__(self, inventory: CachedRead, *, health: CachedRead | None = None,
                 health_metrics: Callable[[object], Sequence[Metric]] | None = None) -> None:
        self._inventory, self._health, self._health_metrics = inventory, health, health_metrics

    def describe(self) -> list[Metric]:
        return []  # nothing is read at registration

    def collect(self) -> Iterator[Metric]:
        inv, error = self._inventory.get()
        yield _up("leoflow_staging_inventory_up",
                  "1 when the last inventory read from the database succeeded, 0 when it failed.", error is None)
        if isinstance(inv, Inventory):
            yield from inventory_metrics(inv)
        if self._health is not None and self._health_metrics is not None:
            health, error = self._health.get()
            yield _up("leoflow_staging_gc_health_up",
                      "1 when the last read of the GC's sweep records succeeded, 0 when it failed.", error is None)
            if health is not None:
                yield from self._health_metrics(health)


__all__ = ["CachedRead", "InventoryCollector", "inventory_metrics"]
