"""``python -m bench`` (``make bench``): run every benchmark against the real parts, write the results.

Sizes can be reduced for a quick look: LEOFLOW_DEV_BENCH_QUICK=1.
"""

from __future__ import annotations

import json
import os
import sys

from bench import apiserver_bench, gc_bench, node_bench, profile_hot_path, report, wrk_bench
from bench.env import bench_env


def main() -> int:
    quick = os.environ.get("LEOFLOW_DEV_BENCH_QUICK") == "1"
    rounds = 1 if quick else 3
    results: dict[str, object] = {"machine": report.machine(), "rounds": rounds}
    with bench_env() as env:
        _, body = env.plane.get("/version")
        results["kubernetes"] = json.loads(body)["gitVersion"]
        print("bench: profiling the warm path in-process (bench/profile.txt) ...", flush=True)
        results["profile"] = profile_hot_path.run(env, requests=300 if quick else 2000)
        print("bench: wrk: warm /mutate (realistic pod) vs no-op, keep-alive TLS ...", flush=True)
        results["wrk"] = wrk_bench.run(env, rounds=rounds, seconds=2 if quick else 5)
        print("bench: through the apiserver (pod CREATE overhead, cold path) ...", flush=True)
        results["apiserver"] = apiserver_bench.run(env, rounds=rounds, pods=30 if quick else 150,
                                                   cold_pods=30 if quick else 150)
        report.write(results)  # keep what is measured so far if the long GC part fails
        print("bench: GC sweeps ...", flush=True)
        sizes = (1_000,) if quick else tuple(int(n) for n in os.environ.get(
            "LEOFLOW_DEV_BENCH_GC_SIZES", "10000,100000").split(","))
        results["gc"] = gc_bench.run(env, sizes=sizes)
    report.write(results)
    if os.geteuid() == 0:
        print("bench: pod create -> running on the real node (a/b/c interleaved; ~2 min) ...", flush=True)
        results["node"] = node_bench.run(rounds=2 if quick else 5, per_round=2 if quick else 4)
    else:
        print("bench: the real node needs root; pod start-up latencies not measured", flush=True)
    print(report.write(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
