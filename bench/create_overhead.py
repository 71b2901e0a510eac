"""Pod CREATE through the real apiserver, four arms (``bench.arms``): plain, a MutatingAdmissionPolicy (the
in-apiserver floor), the real webhook on its warm path, and a minimal webhook returning a fixed patch (the network
and TLS floor of any webhook). The same ~5.5 KB opted-in pod in each arm's namespace; in every iteration one create
per arm, in a shuffled order; the i-th creates of an iteration are paired. Between rounds the pods are deleted.

Besides the client's latencies, where the webhook's extra milliseconds go: the apiserver's own histograms (the call
to each webhook, the policy's check), the servers' own time (the real webhook's latency histogram, looked up by
name pattern in its /metrics; the minimal server's timer), each server's CPU per call (/proc: utime + stime, whose
sum the kernel keeps exact) and the TCP connections the apiserver opened to each.

``python -m bench.create_overhead [rounds] [per_round]`` runs it alone. Figures only: goals are reported, never
asserted.
"""

from __future__ import annotations

import json
import math
import random
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench import arms
from bench.admin_api import AdminApi, timed_create
from bench.cpu import tree_cpu_seconds
from bench.env import BenchEnv
from bench.minimal_webhook import MinimalWebhook
from bench.promtext import Totals, difference, histogram_names, histogram_totals
from bench.realistic_pod import realistic_pod
from bench.server_bench import admission_lines
from bench.stats import paired_summary_ms, percentile
from bench.tcp_conns import ConnectionTracker

DAG, RUN = "analytics/daily_revenue", "scheduled__2026-11-28T00:00:00+00:00"
PAIRS = (("webhook", "policy"), ("minimal", "policy"), ("policy", "plain"), ("webhook", "minimal"),
         ("webhook", "plain"))
GOAL_MS = 2.0  # webhook - policy at p50
WEBHOOK_CALL = "apiserver_admission_webhook_admission_duration_seconds"
POLICY_CHECK = "apiserver_mutating_admission_policy_check_duration_seconds"
SERVER_LATENCY = r"^leoflow_staging_.*admission.*duration_seconds$"  # the webhook's own; its name may change
SAMPLE_EVERY = 40  # iterations between two looks at the connections


def _await_patched(api: AdminApi, arm: str, body: bytes, *, timeout: float = 30.0) -> dict[str, Any]:
    """Create pods in ``arm`` until one comes back patched (registrations reach the apiserver's informers with
    some delay); returns what the patch gave it."""
    deadline = time.monotonic() + timeout
    while True:
        _, resp = timed_create(api, arms.pods_path(arm), body)
        staging = arms.staging_of(resp.json())
        if staging["annotation"] or time.monotonic() > deadline:
            return staging
        time.sleep(0.3)


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        return str(resp.read().decode())


def _warm_claim(env: BenchEnv, api: AdminApi, body: bytes) -> str:
    """Namespaces, the real webhook's registration and the run's first pod (the cold path: its claim is created
    now, every later pod of the run takes the warm path); returns the claim's name."""
    arms.create_namespaces(api)
    arms.register(api, "mutatingwebhookconfigurations", arms.real_webhook_configuration(env.webhook))
    first = _await_patched(api, "webhook", body)
    if not first["claim"]:
        raise RuntimeError(f"the real webhook did not patch the pod: {first}")
    return str(first["claim"])


def _register_floors(api: AdminApi, minimal: MinimalWebhook, claim: str, body: bytes) -> dict[str, Any]:
    """The minimal webhook's and the policy's registrations; then every arm is checked to patch (or not) alike."""
    assert minimal.ca is not None
    arms.register(api, "mutatingwebhookconfigurations", arms.minimal_webhook_configuration(
        minimal.url, minimal.ca.cert_pem))
    arms.register(api, "mutatingadmissionpolicies", arms.policy(claim))
    arms.register(api, "mutatingadmissionpolicybindings", arms.policy_binding())
    check = {arm: _await_patched(api, arm, body, timeout=0 if arm == "plain" else 30) for arm in arms.ARMS}
    if check["plain"]["claim"] or any(check[a] != check["webhook"] for a in ("policy", "minimal")):
        raise RuntimeError(f"the arms do not patch alike: {check}")
    return check


def _delete_pods(api: AdminApi) -> None:
    for arm in arms.ARMS:  # unscheduled pods go at once (no kubelet to wait for)
        api.delete(arms.pods_path(arm))


def _round(api: AdminApi, body: bytes, iterations: int, rng: random.Random,
           sample: Callable[[], None]) -> dict[str, list[float]]:
    """``iterations`` times one create per arm, in a shuffled order; every answer is checked to be a 201."""
    times: dict[str, list[float]] = {arm: [] for arm in arms.ARMS}
    last: dict[str, requests.Response] = {}
    order = list(arms.ARMS)
    for i in range(iterations):
        rng.shuffle(order)
        for arm in order:
            elapsed, last[arm] = timed_create(api, arms.pods_path(arm), body)
            times[arm].append(elapsed)
        if i % SAMPLE_EVERY == SAMPLE_EVERY - 1:
            sample()
    for arm, resp in last.items():  # the last answer of each arm still carries its patch (or none)
        if bool(arms.staging_of(resp.json())["claim"]) != (arm != "plain"):
            raise RuntimeError(f"arm {arm} stopped patching as it should: {arms.staging_of(resp.json())}")
    return times


def _arm_summary(rounds: list[list[float]]) -> dict[str, float]:
    ms = [t * 1000 for times in rounds for t in times]
    return {"p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "mean_ms": round(sum(ms) / len(ms), 3), "n": len(ms)}


class _Scrapes:
    """Before/after readings of the apiserver's, the real webhook's and the minimal webhook's figures."""

    def __init__(self, env: BenchEnv, api: AdminApi, minimal: MinimalWebhook) -> None:
        self.env, self.api, self.minimal = env, api, minimal
        self.before: dict[str, Any] = {}
        self.cpu_before: dict[str, float] = {}
        self.trackers = {arm: ConnectionTracker(port) for arm, port in (
            ("webhook", env.webhook.port), ("minimal", minimal.port))} if ConnectionTracker.available() else {}

    def _read(self) -> dict[str, Any]:
        server = _get(self.env.webhook.url + "/metrics", self.env.webhook.ssl_context())
        names = histogram_names(server, SERVER_LATENCY)
        return {"apiserver": self.api.get_text("/metrics"), "server": server, "server_metric": names[0] if names
                else None, "minimal": self.minimal.stats(), "log_offset": self._log().stat().st_size}

    def _log(self) -> Path:
        assert self.env.webhook.process is not None
        return self.env.webhook.process.log_path

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far of each server's process tree (the gunicorn master and workers; the minimal one)."""
        assert self.env.webhook.process is not None and self.minimal.process is not None
        return {"webhook": tree_cpu_seconds([self.env.webhook.process.pid]),
                "minimal": tree_cpu_seconds([self.minimal.process.pid])}

    def start(self) -> None:
        self.before = self._read()
        self.cpu_before = self._cpu()  # after the scrape of the webhook's /metrics
        for tracker in self.trackers.values():
            tracker.start()

    def sample(self) -> None:
        for tracker in self.trackers.values():
            tracker.sample()

    def finish(self) -> dict[str, Any]:
        conns = {arm: t.finish() for arm, t in self.trackers.items()}  # before this reading's own connection
        cpu = {arm: seconds - self.cpu_before[arm] for arm, seconds in self._cpu().items()}
        after = self._read()
        conns.setdefault("minimal", {})["accepts"] = after["minimal"]["accepts"] - self.before["minimal"]["accepts"]
        share = _apiserver_share(after["apiserver"], self.before["apiserver"])
        calls = share["apiserver_webhook_call"]
        return {**share, **self._servers_own(after), "connections": conns, "server_cpu_ms_per_call": {
            arm: round(cpu[arm] * 1000 / calls[arm]["count"], 3) if calls[arm]["count"] else None for arm in cpu}}

    def _servers_own(self, after: dict[str, Any]) -> dict[str, Any]:
        """Each server's own time per admission: the real webhook's histogram (and its log lines), the minimal
        server's timer."""
        before, metric = self.before, after["server_metric"]
        server = difference(histogram_totals(after["server"], metric),
                            histogram_totals(before["server"], metric)) if metric else {}
        lines = admission_lines(self._log(), before["log_offset"], "patched")
        log_ms = [float(line["ms"]) for line in lines]
        waited = [float(line["waited_ms"]) for line in lines if "waited_ms" in line]  # logged when over 1 ms
        minimal_ms = after["minimal"]["times_ms"][len(before["minimal"]["times_ms"]):]
        return {"webhook_server": {"metric": metric, **_totals(server.get("", Totals())),
                                   "log_p50_ms": round(percentile(log_ms, 50), 3),
                                   "log_p99_ms": round(percentile(log_ms, 99), 3),
                                   "waited_over_1ms": len(waited), "waited_p50_ms": percentile(waited, 50),
                                   # TCP_INFO's age counts in jiffies (4 ms at HZ=250): one value is coarse, the
                                   # mean over all admissions (unlogged ones waited ~0) is not biased by it
                                   "waited_mean_ms": round(sum(waited) / len(lines), 3) if lines else None},
                "minimal_server": {"mean_ms": round(sum(minimal_ms) / len(minimal_ms), 3) if minimal_ms else None,
                                   "p50_ms": round(percentile(minimal_ms, 50), 3),
                                   "p99_ms": round(percentile(minimal_ms, 99), 3), "count": len(minimal_ms)}}


def _apiserver_share(after: str, before: str) -> dict[str, Any]:
    """The apiserver's own histograms: its call to each webhook, the policy's check."""
    calls = difference(histogram_totals(after, WEBHOOK_CALL, "name"), histogram_totals(before, WEBHOOK_CALL, "name"))
    checks = difference(histogram_totals(after, POLICY_CHECK, "policy"),
                        histogram_totals(before, POLICY_CHECK, "policy"))
    return {"apiserver_webhook_call": {arm: _totals(calls.get(name, Totals()))
                                       for arm, name in arms.WEBHOOK_NAMES.items()},
            "apiserver_policy_check": _totals(checks.get(arms.POLICY, Totals()))}


def _totals(t: Totals) -> dict[str, float]:
    return {"mean_ms": t.mean_ms, "count": int(t.count)}


def _measure(env: BenchEnv, api: AdminApi, minimal: MinimalWebhook, body: bytes, *, rounds: int, per_round: int,
             warmup: int) -> tuple[dict[str, list[list[float]]], dict[str, Any]]:
    """The timed rounds (after an untimed warm-up: connections, caches, compiled CEL) and where the time went."""
    _round(api, body, warmup, random.Random(-1), lambda: None)
    _delete_pods(api)
    scrapes = _Scrapes(env, api, minimal)
    scrapes.start()
    per_arm: dict[str, list[list[float]]] = {arm: [] for arm in arms.ARMS}
    for r in range(rounds):
        times = _round(api, body, per_round, random.Random(r), scrapes.sample)
        for arm in arms.ARMS:
            per_arm[arm].append(times[arm])
        _delete_pods(api)  # etcd stays small; the deletes are not timed
    return per_arm, scrapes.finish()


def run(env: BenchEnv, *, rounds: int = 3, per_round: int = 350, warmup: int = 20) -> dict[str, Any]:
    api = AdminApi.of(env.plane)
    pod = realistic_pod(DAG, RUN)
    body = json.dumps(pod).encode()
    minimal: MinimalWebhook | None = None
    try:
        claim = _warm_claim(env, api, body)
        minimal = MinimalWebhook(Path(tempfile.mkdtemp(prefix="leoflow-minimal-")), arms.staging_ops(pod, claim))
        minimal.start()
        _register_floors(api, minimal, claim, body)
        per_arm, where = _measure(env, api, minimal, body, rounds=rounds, per_round=per_round, warmup=warmup)
    finally:
        if minimal is not None:
            minimal.stop()
        arms.unregister(api)
    paired = {f"{a}-{b}": paired_summary_ms(per_arm[a], per_arm[b]) for a, b in PAIRS}
    summaries = {arm: _arm_summary(per_arm[arm]) for arm in arms.ARMS}
    gap = paired["webhook-policy"]["median_ms"]
    where["each_create_through_its_arm"] = _counts_match(where, rounds * per_round)
    return {"pod_bytes": len(body), "rounds": rounds, "per_round": per_round, "claim": claim,
            "minimal_server": "http.server + ssl (bench/minimal_webhook.py)", "arms": summaries, "paired": paired,
            "goal": {"webhook_minus_policy_p50_ms": gap, "target_ms": GOAL_MS, "met": gap <= GOAL_MS,
                     "difference_of_p50s_ms": round(summaries["webhook"]["p50_ms"] - summaries["policy"]["p50_ms"], 3)},
            "where": where}


def _counts_match(where: dict[str, Any], creates: int) -> bool:
    """The apiserver called each webhook and checked the policy once per create of its arm, never more."""
    calls = where["apiserver_webhook_call"]
    return calls["webhook"]["count"] == calls["minimal"]["count"] == where["apiserver_policy_check"]["count"] == creates


def _met(ok: bool) -> str:
    return "met ✅" if ok else "not met ❌"


def markdown(res: dict[str, Any]) -> list[str]:
    """Rows for the results table (figure | measured | target)."""
    if not res:
        return []
    rows = [f"| pod CREATE ({res['pod_bytes']} B pod), {arm}: p50 / p99 / mean | {f['p50_ms']} / {f['p99_ms']} / "
            f"{f['mean_ms']} ms (n={f['n']}) | |" for arm, f in res["arms"].items()]
    for pair, p in res["paired"].items():
        target = ""
        if pair == "webhook-policy":
            target = (f"<= {res['goal']['target_ms']} ms at p50: {_met(res['goal']['met'])} (difference of the "
                      f"p50s: {res['goal']['difference_of_p50s_ms']} ms)")
        rows.append(f"| paired {pair.replace('-', ' minus ')}: median [IQR] (round medians) | {p['median_ms']} ms "
                    f"[{p['q1_ms']} .. {p['q3_ms']}] ({p['round_median_min_ms']} .. {p['round_median_max_ms']}) "
                    f"| {target} |")
    return rows


def where_markdown(res: dict[str, Any]) -> list[str]:
    """The table of where the webhook's extra milliseconds go (means over the measured rounds)."""
    if not res:
        return []
    w, a = res["where"], res["arms"]
    calls, conns = w["apiserver_webhook_call"], w["connections"]
    server = w["webhook_server"]
    minimal = w["minimal_server"]

    def outside(call: float, own: float | None) -> str:
        return f"{round(call - own, 3)}" if own is not None and not math.isnan(call) else "?"

    def conn(arm: str) -> str:
        c = conns.get(arm, {})
        seen = f"{c['opened']} (ss)" if "opened" in c else "?"
        return seen + (f", {c['accepts']} accepted" if "accepts" in c else "")

    return [
        "| mean, ms | policy | real webhook | minimal webhook |", "| --- | --- | --- | --- |",
        f"| client: create minus plain's create | {round(a['policy']['mean_ms'] - a['plain']['mean_ms'], 3)} | "
        f"{round(a['webhook']['mean_ms'] - a['plain']['mean_ms'], 3)} | "
        f"{round(a['minimal']['mean_ms'] - a['plain']['mean_ms'], 3)} |",
        f"| apiserver: the policy's check / the call to the webhook ({POLICY_CHECK} / {WEBHOOK_CALL}) | "
        f"{w['apiserver_policy_check']['mean_ms']} (n={w['apiserver_policy_check']['count']}) | "
        f"{calls['webhook']['mean_ms']} (n={calls['webhook']['count']}) | "
        f"{calls['minimal']['mean_ms']} (n={calls['minimal']['count']}) |",
        f"| server's own time ({server['metric']}; the minimal server's timer) | | {server['mean_ms']} "
        f"(n={server['count']}; log p50 {server['log_p50_ms']}, p99 {server['log_p99_ms']}) | {minimal['mean_ms']} "
        f"(n={minimal['count']}; p50 {minimal['p50_ms']}, p99 {minimal['p99_ms']}) |",
        f"| before the route: waited_ms of the webhook's log, mean over all admissions (logged over 1 ms: count, "
        f"their p50) | | {server['waited_mean_ms']} ({server['waited_over_1ms']}, {server['waited_p50_ms']}) | |",
        f"| server's CPU per call (its process tree, /proc) | | {w['server_cpu_ms_per_call']['webhook']} | "
        f"{w['server_cpu_ms_per_call']['minimal']} |",
        f"| between: network, TLS, HTTP, the apiserver's encode/decode/patch (call minus server) | | "
        f"{outside(calls['webhook']['mean_ms'], server['mean_ms'])} | "
        f"{outside(calls['minimal']['mean_ms'], minimal['mean_ms'])} |",
        f"| each create went through its arm only (the apiserver's counts) | "
        f"{'yes' if w['each_create_through_its_arm'] else 'NO'} | | |",
        f"| TCP connections the apiserver opened during the run (calls: {calls['webhook']['count']} / "
        f"{calls['minimal']['count']}) | | {conn('webhook')} | {conn('minimal')} |",
    ]


def main() -> int:
    from bench import report  # noqa: PLC0415
    from bench.env import bench_env  # noqa: PLC0415

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    per_round = int(sys.argv[2]) if len(sys.argv) > 2 else 350
    with bench_env() as env:
        res = run(env, rounds=rounds, per_round=per_round)
    print(json.dumps({"machine": report.machine(), "create_overhead": res}, indent=2))
    print("\n".join(["| figure | measured | target |", "| --- | --- | --- |", *markdown(res), "",
                     *where_markdown(res)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
