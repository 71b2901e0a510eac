"""2. Pod CREATE through the real apiserver: opted-in pods of a warm run vs pods without the opt-in.
3. Cold path: the first pod of a new run (PVC create + row)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests

from bench.env import NAMESPACE, BenchEnv
from bench.server_bench import server_side_ms
from bench.stats import median_of_rounds, percentile, summary_ms
from leoflow_staging.devenv.pods import task_pod


def _session(env: BenchEnv) -> requests.Session:
    env.plane.get("/version")  # writes the admin client certificate files
    pki = env.plane.workdir / "pki"
    session = requests.Session()
    session.trust_env = False
    session.verify = str(pki / "ca.crt")
    session.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
    return session


def _pod(run: str, opt_in: bool) -> bytes:
    return json.dumps(task_pod("bench_dag", run, opt_in=opt_in)).encode()


def _create(session: requests.Session, url: str, body: bytes) -> float:
    started = time.perf_counter()
    resp = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    elapsed = time.perf_counter() - started
    if resp.status_code != 201:
        raise RuntimeError(f"pod create failed: {resp.status_code} {resp.text[:300]}")
    return elapsed


def run(env: BenchEnv, *, rounds: int = 3, pods: int = 150, cold_pods: int = 150) -> dict[str, Any]:
    session = _session(env)
    url = f"{env.plane.server}/api/v1/namespaces/{NAMESPACE}/pods"
    warm_run = "warm__2026-11-28"
    _create(session, url, _pod(warm_run, True))  # make the run warm
    for _ in range(20):  # warm the connections and caches of both paths
        _create(session, url, _pod(warm_run, True))
        _create(session, url, _pod(warm_run, False))
    per_round: dict[str, list[dict[str, float]]] = {"opted_in": [], "plain": []}
    for _ in range(rounds):
        lat: dict[str, list[float]] = {"opted_in": [], "plain": []}
        for _ in range(pods):  # interleaved: each pair sees the same conditions
            lat["opted_in"].append(_create(session, url, _pod(warm_run, True)))
            lat["plain"].append(_create(session, url, _pod(warm_run, False)))
        for key, values in lat.items():
            per_round[key].append(summary_ms(values))
    opted, plain = median_of_rounds(per_round["opted_in"]), median_of_rounds(per_round["plain"])
    assert env.webhook.process is not None
    log = env.webhook.process.log_path
    offset = log.stat().st_size
    cold = [_create(session, url, _pod(f"cold__{uuid.uuid4().hex}", True)) for _ in range(cold_pods)]
    server_cold = server_side_ms(log, offset, "patched_new_pvc")
    return {
        "pod_create": {"opted_in": opted, "plain": plain,
                       "overhead_p50_ms": round(opted["p50_ms"] - plain["p50_ms"], 3),
                       "overhead_p99_ms": round(opted["p99_ms"] - plain["p99_ms"], 3)},
        "cold_first_pod": {"client": summary_ms(cold),
                           "server_side_ms": {"p50": round(percentile(server_cold, 50), 3),
                                              "p99": round(percentile(server_cold, 99), 3), "n": len(server_cold)}},
    }
