"""Percentiles and medians of rounds (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {"p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3), "n": len(ms)}


def median_of_rounds(rounds: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each key's median over the rounds (the figure reported)."""
    keys = rounds[0].keys()
    return {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys}
