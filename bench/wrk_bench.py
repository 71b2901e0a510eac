"""The server alone under wrk (a compiled load generator, so the client is not the bottleneck): warm
``/mutate`` with the realistic ~5.5 KB pod as an AdmissionReview, the same server's no-op ``/healthz``, and the
same review sent to the minimal webhook (``bench.minimal_webhook``, a fixed patch: the floor of any Python TLS
server), keep-alive TLS, concurrency 1, 8 and 32, the three interleaved round by round. For every run, the CPU
(user + system, from /proc) of the server's process tree (the gunicorn master and its workers) divided by the
requests answered: the CPU per warm admission. Goals: CPU per admission at c=8 <= 1.5 ms; latency at c=1
p50 <= 2 ms, p99 <= 4 ms.

``python -m bench.wrk_bench`` runs it alone (its own control plane, PostgreSQL and webhook); ``make bench``
runs it with the other benchmarks. Figures only: goals are reported, never asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.arms import staging_ops
from bench.cpu import children_cpu_seconds, tree_cpu_seconds
from bench.env import NAMESPACE, BenchEnv
from bench.minimal_webhook import MinimalWebhook
from bench.realistic_pod import realistic_pod, realistic_review
from bench.server_bench import server_side_ms
from bench.stats import median_of_rounds, percentile

LEVELS = (1, 8, 32)
CPU_GOAL_MS = 1.5  # per warm admission at c=8
C1_GOAL_MS = (2.0, 4.0)  # p50, p99 at c=1

# Prints the figures as one JSON line after the run (latencies in microseconds).
_DONE = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
                 + summary.errors.status + summary.errors.timeout
  io.write(string.format('WRK {"requests": %d, "seconds": %f, "errors": %d, "p50_us": %d, "p99_us": %d, '
    .. '"mean_us": %f}\\n', summary.requests, summary.duration / 1e6, errors, latency:percentile(50),
    latency:percentile(99), latency.mean))
end
"""


def _script(workdir: Path, name: str, body: bytes | None) -> Path:
    path = workdir / f"{name}.lua"
    lines = []
    if body is not None:
        (workdir / f"{name}.json").write_bytes(body)
        lines += [f'local f = assert(io.open("{workdir / (name + ".json")}", "rb"))',
                  "wrk.method = \"POST\"", "wrk.body = f:read(\"*a\")", "f:close()",
                  'wrk.headers["Content-Type"] = "application/json"']
    path.write_text("\n".join(lines) + _DONE)
    return path


def _wrk(url: str, script: Path, concurrency: int, seconds: float) -> dict[str, float]:
    threads = min(concurrency, 2)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
                          "-s", str(script), url], check=True, capture_output=True, text=True, timeout=seconds + 60)
    line = next(raw for raw in out.stdout.splitlines() if raw.startswith("WRK "))
    data = json.loads(line[4:])
    return {"p50_ms": round(data["p50_us"] / 1000, 3), "p99_ms": round(data["p99_us"] / 1000, 3),
            "rps": round(data["requests"] / data["seconds"], 1), "errors": data["errors"],
            "requests": data["requests"]}


def _wrk_with_cpu(server_pid: int, url: str, script: Path, concurrency: int, seconds: float) -> dict[str, float]:
    """One wrk run, plus the server's CPU (master and workers, /proc) per request answered."""
    before, workers = tree_cpu_seconds([server_pid]), children_cpu_seconds(server_pid)
    fig = _wrk(url, script, concurrency, seconds)
    cpu = tree_cpu_seconds([server_pid]) - before
    fig["cpu_ms_per_request"] = round(cpu * 1000 / fig["requests"], 3) if fig["requests"] else float("nan")
    after = children_cpu_seconds(server_pid)
    if len(after) > 1:  # how evenly the connections spread over the workers: the busiest one's share of their CPU
        spent = [after[w] - workers.get(w, 0.0) for w in after]
        fig["busiest_worker_share"] = round(max(spent) / sum(spent), 2) if sum(spent) else float("nan")
    return fig


ServerTimer = Callable[[], Callable[[], list[float]]]  # start -> the server's own times (ms) since the start


@dataclass(frozen=True)
class _Target:
    url: str
    script: Path
    pid: int  # the server process whose tree's CPU is counted
    timer: ServerTimer | None = None


def _log_timer(log: Path) -> ServerTimer:
    """The real webhook's own time per warm admission, from its log lines ("ms")."""
    def start() -> Callable[[], list[float]]:
        offset = log.stat().st_size
        return lambda: server_side_ms(log, offset, "patched")
    return start


def _minimal_timer(minimal: MinimalWebhook) -> ServerTimer:
    def start() -> Callable[[], list[float]]:
        done = len(minimal.stats()["times_ms"])
        return lambda: [float(t) for t in minimal.stats()["times_ms"][done:]]
    return start


def _level(targets: dict[str, _Target], c: int, rounds: int, seconds: float) -> dict[str, Any]:
    """Every target at concurrency ``c``, interleaved round by round (all see the same background load)."""
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    server: dict[str, list[float]] = {name: [] for name, t in targets.items() if t.timer}
    for _ in range(rounds):
        for name, t in targets.items():
            finish = t.timer() if t.timer else None
            per_round[name].append(_wrk_with_cpu(t.pid, t.url, t.script, c, seconds))
            if finish is not None:
                server[name] += finish()
    out: dict[str, Any] = {name: median_of_rounds(figs) for name, figs in per_round.items()}
    out["throughput_ratio"] = round(out["mutate"]["rps"] / out["noop"]["rps"], 2)
    out["server_side_ms"] = {name: {"p50": round(percentile(ms, 50), 3), "p99": round(percentile(ms, 99), 3),
                                    "n": len(ms)} for name, ms in server.items()}
    return out


def _goals(c1: dict[str, float], c8: dict[str, float]) -> dict[str, Any]:
    return {"cpu_ms_per_admission_c8": {"value": c8["cpu_ms_per_request"], "target": CPU_GOAL_MS,
                                        "met": c8["cpu_ms_per_request"] <= CPU_GOAL_MS},
            "c1_p50_p99_ms": {"value": [c1["p50_ms"], c1["p99_ms"]], "target": list(C1_GOAL_MS),
                              "met": c1["p50_ms"] <= C1_GOAL_MS[0] and c1["p99_ms"] <= C1_GOAL_MS[1]}}


def run(env: BenchEnv, *, rounds: int = 3, seconds: float = 5.0) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        print("bench: wrk not installed (hack/ensure-wrk.sh); wrk figures not measured", flush=True)
        return {}
    dag, run_id = "analytics/daily_revenue", "scheduled__2026-11-28T00:00:00+00:00"
    body = realistic_review(dag, run_id, NAMESPACE)
    workdir = Path(tempfile.mkdtemp(prefix="leoflow-wrk-"))
    mutate = _script(workdir, "mutate", body)
    assert env.webhook.process is not None
    pid = env.webhook.process.pid
    _wrk(env.webhook.url + "/mutate", mutate, 1, 1)  # the first admission creates the PVC and row
    minimal = MinimalWebhook(workdir / "minimal", staging_ops(realistic_pod(dag, run_id), "leoflow-staging-fixed"))
    minimal.start()
    try:
        assert minimal.process is not None
        targets = {"noop": _Target(env.webhook.url + "/healthz", _script(workdir, "noop", None), pid),
                   "mutate": _Target(env.webhook.url + "/mutate", mutate, pid,
                                     _log_timer(env.webhook.process.log_path)),
                   "minimal": _Target(minimal.url, mutate, minimal.process.pid, _minimal_timer(minimal))}
        results: dict[str, Any] = {"body_bytes": len(body)}
        for c in LEVELS:
            results[f"c{c}"] = _level(targets, c, rounds, seconds)
    finally:
        minimal.stop()
    results["goals"] = _goals(results["c1"]["mutate"], results["c8"]["mutate"])
    return results


def _met(ok: bool) -> str:
    return "met ✅" if ok else "not met ❌"


def markdown(results: dict[str, Any]) -> list[str]:
    """Rows for the results table: each warm figure with its no-op baseline beside it."""
    rows = []
    goals = results.get("goals") or {}
    for level in (f"c{c}" for c in LEVELS):
        if level not in results:
            continue
        fig = results[level]
        m, n, floor = fig["mutate"], fig["noop"], fig["minimal"]
        target = ""
        if level == "c8" and goals:
            target = f"<= {CPU_GOAL_MS} ms: {_met(goals['cpu_ms_per_admission_c8']['met'])}"
        rows.append(f"| wrk {level}: CPU per request (/proc), webhook's warm /mutate vs its no-op vs the minimal "
                    f"webhook | {m['cpu_ms_per_request']} vs {n['cpu_ms_per_request']} vs "
                    f"{floor['cpu_ms_per_request']} ms | {target} |")
        target = ""
        if level == "c1" and goals:
            target = (f"p50 <= {C1_GOAL_MS[0]}, p99 <= {C1_GOAL_MS[1]} ms: "
                      f"{_met(goals['c1_p50_p99_ms']['met'])}")
        rows.append(f"| wrk {level}: p50 / p99 /mutate vs no-op vs minimal webhook | {m['p50_ms']} / {m['p99_ms']} "
                    f"vs {n['p50_ms']} / {n['p99_ms']} vs {floor['p50_ms']} / {floor['p99_ms']} ms | {target} |")
        rows.append(f"| wrk {level}: req/s /mutate vs no-op (ratio, information) vs minimal webhook | {m['rps']} vs "
                    f"{n['rps']} ({fig['throughput_ratio']}) vs {floor['rps']} | |")
        if "busiest_worker_share" in m:
            rows.append(f"| wrk {level}: the busiest gunicorn worker's share of the workers' CPU, /mutate vs no-op | "
                        f"{m['busiest_worker_share']} vs {n['busiest_worker_share']} | |")
        ss, sm = fig["server_side_ms"]["mutate"], fig["server_side_ms"]["minimal"]
        rows.append(f"| wrk {level}: server's own time p50 / p99, warm /mutate (the webhook's log) vs minimal "
                    f"webhook (its timer) | {ss['p50']} / {ss['p99']} vs {sm['p50']} / {sm['p99']} ms | |")
    return rows


def main() -> int:
    from bench import report  # noqa: PLC0415
    from bench.env import bench_env  # noqa: PLC0415

    with bench_env() as env:
        results = run(env, rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    print(json.dumps({"machine": report.machine(), "wrk": results}, indent=2))
    print("\n".join(markdown(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
