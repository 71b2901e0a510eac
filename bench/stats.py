"""Percentiles, medians of rounds and paired differences (pure)."""

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


def paired_summary_ms(a_rounds: Sequence[Sequence[float]], b_rounds: Sequence[Sequence[float]]) -> dict[str, float]:
    """``a - b`` paired element by element (the i-th of each round of a with the i-th of b), in ms: the median of
    all differences, their interquartile range, and the lowest and highest of the per-round medians."""
    per_round = [[(x - y) * 1000 for x, y in zip(a, b, strict=True)] for a, b in zip(a_rounds, b_rounds, strict=True)]
    flat = [d for diffs in per_round for d in diffs]
    medians = [statistics.median(diffs) for diffs in per_round if diffs]
    return {"median_ms": round(statistics.median(flat), 3) if flat else float("nan"),
            "q1_ms": round(percentile(flat, 25), 3), "q3_ms": round(percentile(flat, 75), 3),
            "round_median_min_ms": round(min(medians), 3) if medians else float("nan"),
            "round_median_max_ms": round(max(medians), 3) if medians else float("nan"), "n": len(flat)}
