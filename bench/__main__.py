"""``python -m bench`` (``make bench``): run every benchmark against the real parts, write the results.

Sizes can be reduced for a quick look: LEOFLOW_DEV_BENCH_QUICK=1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from bench import (
    apiserver_bench,
    audit_scrape_bench,
    create_overhead,
    gc_bench,
    gc_pods_bench,
    node_bench,
    profile_hot_path,
    report,
    wrk_bench,
)
from bench.env import BenchEnv, bench_env


def _profile(env: BenchEnv, quick: bool) -> dict[str, Any]:
    """The in-process profile builds the webhook's app from its factory (an internal that may change under it):
    a failure is reported and the other benchmarks go on."""
    try:
        return dict(profile_hot_path.run(env, requests=300 if quick else 2000))
    except Exception:
        traceback.print_exc()
        print("bench: the in-process profile failed (above); the other figures are measured", flush=True)
        return {}


def _step(message: str, measure: Callable[[], Any]) -> Any:
    print(f"bench: {message} ...", flush=True)
    return measure()


def main() -> int:
    quick = os.environ.get("LEOFLOW_DEV_BENCH_QUICK") == "1"
    rounds = 1 if quick else 3
    results: dict[str, object] = {"machine": report.machine(), "rounds": rounds}
    with bench_env() as env:
        _, body = env.plane.get("/version")
        results["kubernetes"] = json.loads(body)["gitVersion"]
        results["create_overhead"] = _step(
            "pod CREATE through the apiserver: plain / policy / real webhook / minimal webhook, interleaved",
            lambda: create_overhead.run(env, rounds=rounds, per_round=60 if quick else 350,
                                        warmup=10 if quick else 20))
        report.write(results)
        results["wrk"] = _step("wrk: warm /mutate (realistic pod) vs no-op, keep-alive TLS, CPU per request",
                               lambda: wrk_bench.run(env, rounds=rounds, seconds=2 if quick else 5))
        results["apiserver"] = _step("through the apiserver: the cold path (first pod of a run)",
                                     lambda: apiserver_bench.run(env, cold_pods=30 if quick else 150))
        # last of the webhook's: the app it builds in this process keeps its watches and pool until the end
        results["profile"] = _step("profiling the warm path in-process (bench/profile.txt)",
                                   lambda: _profile(env, quick))
        report.write(results)  # keep what is measured so far if the long GC part fails
        sizes = (1_000,) if quick else tuple(int(n) for n in os.environ.get(
            "LEOFLOW_DEV_BENCH_GC_SIZES", "10000,100000").split(","))
        results["gc"] = _step("GC sweeps", lambda: gc_bench.run(env, sizes=sizes))
        report.write(results)
        audit_sizes = (300_000,) if quick else (1_000_000, 3_000_000)
        results["audit"] = _step("/metrics over a long audit: the scrape's read vs the old full count",
                                 lambda: audit_scrape_bench.run(env.pg, sizes=audit_sizes))
    report.write(results)
    results["gc_pods"] = _step("the GC in a namespace of finished pods (its own control plane; ~5 min)",
                               lambda: gc_pods_bench.run(pods=2_000 if quick else 20_000))
    report.write(results)
    if os.geteuid() == 0:
        results["node"] = _step("pod create -> running on the real node (a/b/c interleaved; ~2 min)",
                                lambda: node_bench.run(rounds=2 if quick else 5, per_round=2 if quick else 4))
    else:
        print("bench: the real node needs root; pod start-up latencies not measured", flush=True)
    print(report.write(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
