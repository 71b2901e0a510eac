"""The cold path through the real apiserver: the first pod of a new run (the webhook creates the run's PVC and
its row). The warm path's pod CREATE overhead is ``bench.create_overhead`` (four arms against the policy floor)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from bench.admin_api import AdminApi, timed_create
from bench.env import NAMESPACE, BenchEnv
from bench.server_bench import server_side_ms
from bench.stats import percentile, summary_ms
from devenv.pods import task_pod


def run(env: BenchEnv, *, cold_pods: int = 150) -> dict[str, Any]:
    api = AdminApi.of(env.plane)
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    for _ in range(5):  # warm the connections of the path
        timed_create(api, path, json.dumps(task_pod("bench_dag", f"w__{uuid.uuid4().hex}")).encode())
    assert env.webhook.process is not None
    log = env.webhook.process.log_path
    offset = log.stat().st_size
    cold = []
    for _ in range(cold_pods):
        body = json.dumps(task_pod("bench_dag", f"cold__{uuid.uuid4().hex}")).encode()
        cold.append(timed_create(api, path, body)[0])
    server_cold = server_side_ms(log, offset, "patched_new_pvc")
    return {"cold_first_pod": {"client": summary_ms(cold), "server_side_ms": {
        "p50": round(percentile(server_cold, 50), 3), "p99": round(percentile(server_cold, 99), 3),
        "n": len(server_cold)}}}
