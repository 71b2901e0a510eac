"""The webhook's own per-admission time, read from its JSON log (the benchmarks' server-side figure).

The client-side server benchmark is ``wrk_bench`` (wrk, a compiled generator: the Python load generator
that was here cost as much CPU as the server it measured, on the same two cores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def admission_lines(log: Path, offset: int, decision: str) -> list[dict[str, Any]]:
    """The webhook's JSON log lines of admissions with ``decision`` since ``offset``."""
    out = []
    with open(log, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if b'"event": "admission"' not in raw:
                continue
            line = json.loads(raw)
            if line.get("decision") == decision:
                out.append(line)
    return out


def server_side_ms(log: Path, offset: int, decision: str) -> list[float]:
    """The webhook's own per-admission time (the "ms" of its JSON log lines) since ``offset``."""
    return [float(line["ms"]) for line in admission_lines(log, offset, decision)]
