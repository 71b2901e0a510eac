"""Prometheus metrics of the webhook; correct across gunicorn workers (multiprocess mode).

``serving`` sets PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client.
"""

from __future__ import annotations

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.registry import Collector

ADMISSIONS = Counter(
    "leoflow_staging_admissions_total",
    "Admission requests answered, by outcome (allowed, patched, denied) and reason.",
    ["outcome", "reason"],
)
PVCS_CREATED = Counter("leoflow_staging_pvcs_created_total", "Staging PVCs created by the webhook.")
LATENCY = Histogram(
    "leoflow_staging_admission_duration_seconds",
    "Time to answer one /mutate request, including DB and Kubernetes calls.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROVISIONING = Histogram(
    "leoflow_staging_claim_provisioning_seconds",
    "Seconds from a staging PVC's creation to Bound, by StorageClass; observed once per claim by the webhook worker "
    "that created it (docs/storage.md, Honest latencies).",
    ["storage_class"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
BAD_REQUESTS = Counter("leoflow_staging_bad_requests_total", "Bodies rejected with HTTP 4xx.", ["status"])
CACHE_OBJECTS = Gauge("leoflow_staging_cache_objects",
                      "Objects in a worker's watch-fed cache (pvcs, storageclasses), per worker process.",
                      ["cache"], multiprocess_mode="liveall")
CACHE_LISTS = Counter("leoflow_staging_cache_lists_total",
                      "Full LISTs of a watch-fed cache: the first, and one per 410 Gone.", ["cache"])


def render(multiproc_dir: str | None, extra: Collector | None = None) -> tuple[bytes, str]:
    """The exposition text, aggregated over all workers when in multiprocess mode; ``extra`` (the
    database inventory, the same in every worker) is appended once."""
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(DEFAULT_REGISTRY)
    if extra is not None:
        own = CollectorRegistry()
        own.register(extra)
        data += generate_latest(own)
    return data, "text/plain; version=0.0.4; charset=utf-8"
