"""bench/results.json and a markdown table, with the machine's description."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench import create_overhead, wrk_bench

OUT = Path(__file__).resolve().parent


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mb": mem, "python": platform.python_version(),
            "kernel": platform.release(), "postgres": pg}


def _row(name: str, value: Any, target: str, met: bool | None) -> str:
    mark = "" if met is None else (" ✅" if met else " ❌ miss")
    return f"| {name} | {value} | {target}{mark} |"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpus']} cores ({m['cpu']}), {m['memory_mb']} MiB, Python {m['python']}, {m['postgres']}",
             f"Kubernetes {results.get('kubernetes', '?')}; {results.get('rounds', '?')} rounds (pod CREATE: the "
             "creates of all rounds pooled, differences paired; wrk: medians of the rounds).", "",
             "| figure | measured | target |", "| --- | --- | --- |"]
    lines += create_overhead.markdown(results.get("create_overhead") or {})
    lines += wrk_bench.markdown(results.get("wrk") or {})
    cold = (results.get("apiserver") or {}).get("cold_first_pod")
    if cold:
        lines.append(_row("cold first pod (PVC + row), client p50 / p99",
                          f"{cold['client']['p50_ms']} / {cold['client']['p99_ms']} ms", "p99 <= 50 ms",
                          cold["client"]["p99_ms"] <= 50))
        lines.append(_row("cold first pod, server-side p50 / p99",
                          f"{cold['server_side_ms']['p50']} / {cold['server_side_ms']['p99']} ms", "", None))
    for size, g in results.get("gc", {}).items():
        lines.append(_row(f"GC sweep {size} rows ({g['reclaimed']} reclaimed): wall", f"{g['sweep_wall_s']} s",
                          "<= 60 s for 100k", g["sweep_wall_s"] <= 60 if size == "100000" else None))
        lines.append(_row(f"GC {size}: database side (batched plan)", f"{g['db_side_plan_s']} s, "
                          f"{g['db_side_sql_statements']} SQL statements",
                          "<= 30 s for 100k", g["db_side_plan_s"] <= 30 if size == "100000" else None))
        if g.get("mode") == "program":  # `leoflow-staging gc` as the CronJob runs it
            lines.append(_row(f"GC {size}: the program's peak RSS / CPU (parallelism {g['parallelism']})",
                              f"{g['sweep_peak_rss_mb']} MiB / {g['sweep_cpu_s']} s", "<= 256 MiB for 100k",
                              g["sweep_peak_rss_mb"] <= 256 if size == "100000" else None))
            lines.append(_row(f"GC {size}: CPU of the control plane / PostgreSQL during the sweep",
                              f"{g['control_plane_cpu_s']} s / {g['postgres_cpu_s']} s", "", None))
        else:  # in this process, under tracemalloc
            lines.append(_row(f"GC {size}: whole sweep SQL statements / peak memory (tracemalloc)",
                              f"{g['sweep_sql_statements']} / {g['sweep_peak_mb']} MiB", "", None))
    for size, a in (results.get("audit") or {}).items():
        lines.append(_row(f"/metrics over {size} deleted audit rows: the scrape's database read vs the old full "
                          "count of the rows", f"{a['scrape_read_ms']} vs {a['old_full_count_ms']} ms",
                          "scrape <= 50 ms, whatever the history", a["scrape_read_ms"] <= 50))
    pods = results.get("gc_pods")
    for product, sweep in (pods or {}).get("sweeps", {}).items():
        lines.append(_row(f"GC among {pods['pods']} finished pods ({pods['pod_list_json_mb']} MiB of pod JSON), "
                          f"{pods['runs_to_reclaim']} claims held by them ({product}): the program's peak RSS / wall",
                          f"{sweep['sweep_peak_rss_mb']} MiB / {sweep['sweep_wall_s']} s "
                          f"({sweep['finished_pods_deleted']} pods deleted)", "<= 256 MiB",
                          (sweep["sweep_peak_rss_mb"] or 1e9) <= 256))
    node = results.get("node")
    if node:
        for kind, label in (("a_plain", "(a) pod without staging"), ("b_first_of_run", "(b) first pod of a run"),
                            ("c_later_of_run", "(c) later pod of the run"),
                            ("d_plain_with_bound_claim", "(d) pod without staging, a bound claim by hand"),
                            ("e_shared_first_of_run", "(e) first pod of a run, shared-claim mode"),
                            ("f_shared_later_of_run", "(f) later pod of the run, shared-claim mode"),
                            ("g_prepared_first_of_run", "(g) first pod of a run, claim with the prepare step"),
                            ("h_prepared_later_of_run", "(h) later pod of the run, with the prepare step")):
            fig = node.get(kind)
            if fig is None:  # results of a run before these kinds existed
                continue
            lines.append(_row(f"node: create -> running, {label}: p50 / p95", f"{fig['p50_ms']} / {fig['p95_ms']} ms",
                              "", None))
        lines.append(_row("node: (c) - (a) at p50", f"{node['c_minus_a_p50_ms']} ms", "<= 100 ms",
                          node["c_minus_a_p50_ms"] <= 100))
        lines.append(_row("node: (c) - (d) at p50: what staging adds to a pod that mounts a claim anyway",
                          f"{node['c_minus_d_p50_ms']} ms", "", None))
        if "b_minus_e_p50_ms" in node:
            lines.append(_row("node: (b) - (e) at p50: a run's first pod, sooner in the shared-claim mode",
                              f"{node['b_minus_e_p50_ms']} ms", "", None))
        prov = node["provisioner_claim_to_bound"]
        lines.append(_row("node: provisioner's own share of (b): claim create -> Bound p50 / p95",
                          f"{prov['p50_ms']} / {prov['p95_ms']} ms", "", None))
    where = create_overhead.where_markdown(results.get("create_overhead") or {})
    if where:
        lines += ["", "Where the webhook's extra milliseconds go (pod CREATE, means over the measured rounds):", "",
                  *where]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any]) -> str:
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (OUT / "results.md").write_text(table)
    return table
