"""The server alone under wrk (a compiled load generator, so the client is not the bottleneck): warm
``/mutate`` with a realistic 4-6 KB pod against the no-op ``/healthz``, same server, same run, keep-alive
TLS, concurrency 1, 8 and 32, the two interleaved round by round.

``python -m bench.wrk_bench`` runs it alone (its own control plane, PostgreSQL and webhook); ``make bench``
runs it with the other benchmarks. Figures only: nothing is asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.env import NAMESPACE, BenchEnv
from bench.server_bench import server_side_ms
from bench.stats import median_of_rounds, percentile
from leoflow_staging.devenv.pods import admission_review, task_pod

LEVELS = (1, 8, 32)

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


def _container(name: str, image: str, n_env: int) -> dict[str, Any]:
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "leoflow.task", "--dag", "analytics/daily_revenue"],
        "args": ["--ts", "2026-11-28T00:00:00+00:00", "--retries", "3", "--pool", "default_pool"],
        "env": [{"name": f"LEOFLOW_VAR_{i}", "value": f"value-{i}-" + "x" * 24} for i in range(n_env)] + [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "analytics-db", "key": "password"}}}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/leoflow", "readOnly": True},
                         {"name": "scratch", "mountPath": "/scratch"}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }


def realistic_review(dag: str, run: str) -> bytes:
    """A pod CREATE review as an orchestrator sends it: an init container, a task, two sidecars."""
    pod = task_pod(dag, run, init_containers=[_container("fetch-inputs", "leoflow/fetch:2.4.1", 6)],
                   containers=[_container("task", "leoflow/task:2.4.1", 8),
                               _container("log-shipper", "leoflow/log:1.9", 4),
                               _container("metrics", "leoflow/statsd:0.8", 3)],
                   volumes=[{"name": "config", "configMap": {"name": "leoflow-task-config"}},
                            {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}],
                   annotations={"leoflow.io/try-number": "1", "leoflow.io/task-id": "load_revenue_table"})
    pod["spec"].update(serviceAccountName="leoflow-worker", priorityClassName="batch-normal",
                       nodeSelector={"workload": "batch"},
                       tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}])
    return json.dumps(admission_review(pod, NAMESPACE, uid=str(uuid.uuid4()))).encode()


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
            "rps": round(data["requests"] / data["seconds"], 1), "errors": data["errors"]}


def run(env: BenchEnv, *, rounds: int = 3, seconds: float = 5.0) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        print("bench: wrk not installed (hack/ensure-wrk.sh); wrk figures not measured", flush=True)
        return {}
    body = realistic_review("analytics/daily_revenue", "scheduled__2026-11-28T00:00:00+00:00")
    workdir = Path(tempfile.mkdtemp(prefix="leoflow-wrk-"))
    mutate, noop = _script(workdir, "mutate", body), _script(workdir, "noop", None)
    base = env.webhook.url
    assert env.webhook.process is not None
    log = env.webhook.process.log_path
    _wrk(base + "/mutate", mutate, 1, 1)  # the first admission creates the PVC and row: the rest are warm
    results: dict[str, Any] = {"body_bytes": len(body)}
    for c in LEVELS:
        per_round: dict[str, list[dict[str, float]]] = {"mutate": [], "noop": []}
        server: list[float] = []
        for _ in range(rounds):  # interleaved: both see the same background load
            per_round["noop"].append(_wrk(base + "/healthz", noop, c, seconds))
            offset = log.stat().st_size
            per_round["mutate"].append(_wrk(base + "/mutate", mutate, c, seconds))
            server += server_side_ms(log, offset, "patched")
        m, n = median_of_rounds(per_round["mutate"]), median_of_rounds(per_round["noop"])
        results[f"c{c}"] = {"mutate": m, "noop": n, "throughput_ratio": round(m["rps"] / n["rps"], 2),
                            "server_side_ms": {"p50": round(percentile(server, 50), 3),
                                               "p99": round(percentile(server, 99), 3), "n": len(server)}}
    return results


def markdown(results: dict[str, Any]) -> list[str]:
    """Rows for the results table: each warm figure with its no-op baseline beside it."""
    rows = []
    for level in (f"c{c}" for c in LEVELS):
        if level not in results:
            continue
        fig = results[level]
        m, n = fig["mutate"], fig["noop"]
        rows.append(f"| wrk {level}: warm /mutate ({results['body_bytes']} B pod) vs no-op /healthz: req/s | "
                    f"{m['rps']} vs {n['rps']} (ratio {fig['throughput_ratio']}) | >= 0.5x"
                    f"{' ✅' if fig['throughput_ratio'] >= 0.5 else ' ❌ miss'} |")
        met = "" if level != "c1" else (" ✅" if m["p50_ms"] <= 1 and m["p99_ms"] <= 2 else " ❌ miss")
        rows.append(f"| wrk {level}: p50 / p99 /mutate vs no-op | {m['p50_ms']} / {m['p99_ms']} ms vs "
                    f"{n['p50_ms']} / {n['p99_ms']} ms | {'p50 <= 1, p99 <= 2 ms' if level == 'c1' else ''}{met} |")
        ss = fig["server_side_ms"]
        rows.append(f"| wrk {level}: server-side warm time (the webhook's log) p50 / p99 | "
                    f"{ss['p50']} / {ss['p99']} ms | |")
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
