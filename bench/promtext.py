"""Histograms out of Prometheus' text exposition format (pure): sums and counts per label value, and the
difference of two scrapes."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Totals:
    """A histogram's ``_sum`` (seconds) and ``_count`` over the series of one label value."""

    sum_s: float = 0.0
    count: float = 0.0

    def minus(self, before: Totals) -> Totals:
        return Totals(self.sum_s - before.sum_s, self.count - before.count)

    @property
    def mean_ms(self) -> float:
        return round(self.sum_s / self.count * 1000, 3) if self.count else float("nan")


def histogram_names(text: str, pattern: str) -> list[str]:
    """The names of the histograms (``_count`` series) whose name matches ``pattern`` (a regex)."""
    names = {m.group("name")[: -len("_count")] for line in text.splitlines()
             if (m := _SAMPLE.match(line)) and m.group("name").endswith("_count")}
    return sorted(n for n in names if re.search(pattern, n))


def histogram_totals(text: str, metric: str, by: str | None = None,
                     where: dict[str, str] | None = None) -> dict[str, Totals]:
    """``metric``'s sum and count added up per value of label ``by`` (all under key "" without ``by``), over the
    series whose labels include ``where``."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or not m.group("name").startswith(metric):
            continue
        suffix = m.group("name")[len(metric):]
        if suffix not in ("_sum", "_count"):
            continue
        series = dict(_LABEL.findall(m.group("labels") or ""))
        if any(series.get(k) != v for k, v in (where or {}).items()):
            continue
        key = series.get(by, "") if by else ""
        target = sums if suffix == "_sum" else counts
        target[key] = target.get(key, 0.0) + float(m.group("value"))
    return {k: Totals(sums.get(k, 0.0), counts.get(k, 0.0)) for k in sorted(set(sums) | set(counts))}


def difference(after: dict[str, Totals], before: dict[str, Totals]) -> dict[str, Totals]:
    return {k: v.minus(before.get(k, Totals())) for k, v in after.items()}
