"""Pod create -> container running on the real node, with the chart-installed webhook (``make bench``).

Kinds, interleaved in every round so that drift hits them alike: (a) a pod without staging,
(b) the first pod of a run (its claim is created, provisioned, bound and mounted), (c) a later pod
of the same run, and (d) a pod without staging that mounts an already bound claim of the same class
by hand: (c) - (d) is what staging itself adds, (d) - (a) what the kubelet's volume handling costs any
pod with a claim. For (b), the provisioner's own share (claim created -> Bound) is measured too. One pod
at a time; each is timed by a watch from just before its create.

Two more installations, in namespaces of their own, give the other ways a run's volume is mounted: (e) the first
and (f) a later pod of a run in the shared-claim mode (no claim to provision: the run's directory on the
namespace's shared claim, made by the kubelet, marked by the prepare init container), and (g) the first and
(h) a later pod of a run in the claim-per-run mode with ``storage.prepareClaims`` (the prepare init container's
cost over (b) and (c)).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kubernetes import client, watch

from bench.stats import percentile
from devenv.assets import ensure_assets
from devenv.cluster import NodeCluster
from devenv.orchestrator import create_runs_table, set_run
from devenv.pods import task_pod
from devenv.provisioner import STORAGE_CLASS
from shared import labels

TENANT = "bench-node"
SHARED_TENANT, PREPARED_TENANT = "bench-shared", "bench-prepared"
SHARED_CLAIM = "team-staging"


def _pod(image: str, dag: str, run: str, *, staging: bool, claim: str | None = None) -> dict[str, Any]:
    pod = task_pod(dag, run, opt_in=staging, generate_name="lat-", containers=[{
        "name": "task", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}])
    pod["spec"]["enableServiceLinks"] = False
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    if claim:
        pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return pod


def _time_to_running(core: client.CoreV1Api, pod: dict[str, Any], namespace: str = TENANT) -> tuple[float, Any]:
    """Seconds from the create call to the first watch event that shows the container running."""
    stream = watch.Watch()
    start = time.monotonic()
    created = core.create_namespaced_pod(namespace, pod)
    name = created.metadata.name
    for event in stream.stream(core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                               timeout_seconds=120):
        obj = event["object"]
        statuses = obj.status.container_statuses or []
        if statuses and statuses[0].state.running is not None:
            stream.stop()
            return time.monotonic() - start, created
    raise TimeoutError(f"pod {name} not running within 120 s")


def _time_to_bound(core: client.CoreV1Api, storage_class: str) -> float:
    """The provisioner's own share: a claim of the RWX class, from create to Bound (watched)."""
    stream = watch.Watch()
    name = f"prov-{uuid.uuid4().hex[:6]}"
    start = time.monotonic()
    core.create_namespaced_persistent_volume_claim(TENANT, {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    for event in stream.stream(core.list_namespaced_persistent_volume_claim, TENANT,
                               field_selector=f"metadata.name={name}", timeout_seconds=120):
        if event["object"].status.phase == "Bound":
            stream.stop()
            elapsed = time.monotonic() - start
            core.delete_namespaced_persistent_volume_claim(name, TENANT)
            return elapsed
    raise TimeoutError(f"claim {name} not Bound within 120 s")


def run(*, rounds: int = 5, per_round: int = 4) -> dict[str, Any]:
    assets = ensure_assets(node=True)
    work = Path(tempfile.mkdtemp(prefix="leoflow-bench-node-"))
    cluster = NodeCluster(assets=assets, workdir=work)
    cluster.start()
    try:
        return _measure(cluster, rounds=rounds, per_round=per_round)
    finally:
        cluster.stop()


def _measure(cluster: NodeCluster, *, rounds: int, per_round: int) -> dict[str, Any]:
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.create_database("bench_node"))
    create_runs_table(engine)
    cluster.install_chart(release="leoflow-staging", namespace="leoflow-staging", database="bench_node",
                          values=("--set", "gc.suspend=true", "--set", "config.defaultSize=1Gi"))
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": TENANT, "labels": {labels.INSTANCE: "leoflow-staging"}}})
    image = cluster.images["task"].ref
    for release, tenant, extra in (("shared", SHARED_TENANT, ("storage.mode=shared",
                                                             f"storage.sharedClaim.name={SHARED_CLAIM}")),
                                   ("prepared", PREPARED_TENANT, ("storage.prepareClaims=true",))):
        sets = [arg for value in extra for arg in ("--set", value)]
        cluster.install_chart(release=release, namespace=f"leoflow-{release}", database="bench_node",
                              values=("--set", "gc.suspend=true", "--set", "config.defaultSize=1Gi", *sets))
        core.create_namespace({"metadata": {"name": tenant, "labels": {labels.INSTANCE: release}}})
    core.create_namespaced_persistent_volume_claim(SHARED_TENANT, {
        "metadata": {"name": SHARED_CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    _time_to_running(core, _pod(image, "warm", "shared", staging=True), SHARED_TENANT)  # binds the shared claim
    samples: dict[str, list[float]] = {"a_plain": [], "b_first_of_run": [], "c_later_of_run": [],
                                       "d_plain_with_bound_claim": [], "e_shared_first_of_run": [],
                                       "f_shared_later_of_run": [], "g_prepared_first_of_run": [],
                                       "h_prepared_later_of_run": []}
    provisioner_s: list[float] = []
    _time_to_running(core, _pod(image, "warm", "up", staging=False))  # warm the node's caches
    core.create_namespaced_persistent_volume_claim(TENANT, {
        "metadata": {"name": "plain"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                 "resources": {"requests": {"storage": "1Gi"}}}})
    for r in range(rounds):
        for i in range(per_round):
            run_id = f"r{r}-{i}-{uuid.uuid4().hex[:4]}"
            set_run(engine, "bench", run_id, "running")
            seconds, _ = _time_to_running(core, _pod(image, "bench", run_id, staging=False))
            samples["a_plain"].append(seconds)
            seconds, _ = _time_to_running(core, _pod(image, "bench", run_id, staging=True))
            samples["b_first_of_run"].append(seconds)
            provisioner_s.append(_time_to_bound(core, STORAGE_CLASS))
            seconds, _ = _time_to_running(core, _pod(image, "bench", run_id, staging=True))
            samples["c_later_of_run"].append(seconds)
            seconds, _ = _time_to_running(core, _pod(image, "bench", run_id, staging=False, claim="plain"))
            samples["d_plain_with_bound_claim"].append(seconds)
            for tenant, first, later in ((SHARED_TENANT, "e_shared_first_of_run", "f_shared_later_of_run"),
                                         (PREPARED_TENANT, "g_prepared_first_of_run", "h_prepared_later_of_run")):
                for kind in (first, later):
                    seconds, _ = _time_to_running(core, _pod(image, "bench", run_id, staging=True), tenant)
                    samples[kind].append(seconds)
            for tenant in (TENANT, SHARED_TENANT, PREPARED_TENANT):
                for pod in core.list_namespaced_pod(tenant).items:
                    core.delete_namespaced_pod(pod.metadata.name, tenant, grace_period_seconds=0)
    out: dict[str, Any] = {}
    for kind, values in samples.items():
        ms = [v * 1000 for v in values]
        out[kind] = {"p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1), "n": len(ms)}
    out["c_minus_a_p50_ms"] = round(out["c_later_of_run"]["p50_ms"] - out["a_plain"]["p50_ms"], 1)
    out["c_minus_d_p50_ms"] = round(out["c_later_of_run"]["p50_ms"] - out["d_plain_with_bound_claim"]["p50_ms"], 1)
    out["b_minus_e_p50_ms"] = round(out["b_first_of_run"]["p50_ms"] - out["e_shared_first_of_run"]["p50_ms"], 1)
    out["g_minus_b_p50_ms"] = round(out["g_prepared_first_of_run"]["p50_ms"] - out["b_first_of_run"]["p50_ms"], 1)
    prov = [v * 1000 for v in provisioner_s]
    out["provisioner_claim_to_bound"] = {"p50_ms": round(percentile(prov, 50), 1),
                                         "p95_ms": round(percentile(prov, 95), 1), "n": len(prov)}
    engine.dispose()
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(rounds=2, per_round=2), indent=2))
