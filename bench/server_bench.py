"""1. The server alone: warm-path /mutate vs a no-op endpoint, keep-alive TLS, concurrency 1/8/32.
3. Cold path through the apiserver is in apiserver_bench."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from bench import load
from bench.env import NAMESPACE, BenchEnv
from bench.stats import median_of_rounds, percentile, summary_ms
from leoflow_staging.devenv.pods import admission_review, task_pod


def review(dag: str, run: str) -> bytes:
    """A pod CREATE review for an opted-in task pod of the run."""
    pod = task_pod(dag, run, containers=[{"name": "task", "image": "leoflow/task:1",
                                          "env": [{"name": "A", "value": "1"}]}])
    return json.dumps(admission_review(pod, NAMESPACE, uid=str(uuid.uuid4()))).encode()


def server_side_ms(log: Path, offset: int, decision: str) -> list[float]:
    """The webhook's own per-admission time (the "ms" of its JSON log lines) since ``offset``."""
    out = []
    with open(log, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if b'"event": "admission"' not in raw:
                continue
            line = json.loads(raw)
            if line.get("decision") == decision:
                out.append(float(line["ms"]))
    return out


def run(env: BenchEnv, *, rounds: int = 3, per_level: int = 1500) -> dict[str, Any]:
    body = review("bench_dag", "manual__2026-11-28T00:00:00+00:00")
    warm = load.Target(env.webhook.port, env.ca_file, "POST", "/mutate", body)
    load.run(warm, concurrency=1, total=20)  # creates the run's PVC and row: later requests are warm
    noop = load.Target(env.webhook.port, env.ca_file, "GET", "/healthz")
    assert env.webhook.process is not None
    log = env.webhook.process.log_path
    results: dict[str, Any] = {}
    for concurrency in (1, 8, 32):
        total = per_level // 3 if concurrency == 1 else per_level
        per_round: dict[str, list[dict[str, float]]] = {"mutate": [], "noop": []}
        server: list[float] = []
        for _ in range(rounds):
            for name, target in (("noop", noop), ("mutate", warm)):  # interleaved rounds
                offset = log.stat().st_size
                lat, wall, errors = load.run(target, concurrency=concurrency, total=total)
                figures = summary_ms(lat) | {"rps": round(len(lat) / wall, 1), "errors": errors}
                per_round[name].append(figures)
                if name == "mutate":
                    server += server_side_ms(log, offset, "patched")
        mutate, noop_fig = median_of_rounds(per_round["mutate"]), median_of_rounds(per_round["noop"])
        results[f"c{concurrency}"] = {
            "mutate": mutate, "noop": noop_fig,
            "ratio_p50": round(mutate["p50_ms"] / noop_fig["p50_ms"], 2),
            "ratio_p99": round(mutate["p99_ms"] / noop_fig["p99_ms"], 2),
            "server_side_ms": {"p50": round(percentile(server, 50), 3), "p99": round(percentile(server, 99), 3),
                               "n": len(server)},
        }
    return results
