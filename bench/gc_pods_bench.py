"""5. The GC's memory in a namespace that keeps its finished pods (issue 26): 20,000 finished task pods of
about 5 KB each (the realistic pod: ~100 MB of JSON for the namespace's pod list) and runs to reclaim there,
each of whose claims a finished pod holds (so the sweep must list the namespace's pods to find and delete
them). Pods are created through the apiserver and never run (no node): the holders have ``spec.nodeName``
preset, so pvc-protection counts them, and every pod's phase is set to Succeeded through the status subresource.

The sweep is the program the CronJob runs (``leoflow-staging gc``, a child process): its peak resident memory
(the kernel's high-water mark, interpreter and libraries included) and its wall. ``--product PATH`` runs the
GC of another checkout (e.g. the previous release) against the same cluster and database, for a before/after:
the finished pods are seeded once, then each product gets its own runs to reclaim.

    python -m bench.gc_pods_bench [--pods 20000] [--runs 20] [--product /path/to/main-checkout --product .]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kubernetes import client, config

from bench.env import NAMESPACE, RWX_CLASS, create_database
from bench.gc_bench import GcEnv, _sample_rss, gc_env
from bench.realistic_pod import PRIORITY_CLASS, realistic_pod
from devenv.orchestrator import create_runs_table, set_run
from shared import labels
from shared.db.migrate import upgrade
from shared.kube import KubeApi, make_api_client
from shared.naming import pvc_name
from shared.objects import ClaimSpec

INSTANCE = labels.DEFAULT_INSTANCE  # the namespace gc_env makes is labelled for it
DAG = "gc_pods"


def _pod_body(name: str, run: str, claim: str | None) -> dict[str, Any]:
    """A finished task pod (~5.5 KB as sent): named, not opted in (no webhook here); a holder names ``claim``
    and is scheduled (``nodeName``), so the claim stays Terminating until the pod is deleted."""
    pod = copy.deepcopy(realistic_pod(DAG, run))
    meta = pod["metadata"]
    meta.pop("generateName", None)
    meta["name"] = name
    meta["labels"].pop("leoflow.io/staging", None)
    pod["spec"].pop("nodeSelector", None)
    if claim:
        pod["spec"]["volumes"].append({"name": "leoflow-staging", "persistentVolumeClaim": {"claimName": claim}})
        pod["spec"]["nodeName"] = "bench-node-1"
    return pod


def _finished_pods(core: client.CoreV1Api, bodies: list[dict[str, Any]]) -> None:
    """Create each pod, then set its phase to Succeeded through the status subresource (8 at a time)."""
    def create(body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        for call in (lambda: core.create_namespaced_pod(NAMESPACE, body, _preload_content=False),
                     lambda: core.patch_namespaced_pod_status(name, NAMESPACE, {"status": {"phase": "Succeeded"}},
                                                              _preload_content=False)):
            raw: Any = call()  # the raw response, read to its end (then its connection is reused), not decoded
            raw.data  # noqa: B018 - reading is the point
            raw.release_conn()

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, bodies, chunksize=100))


def _seed_pods(core: client.CoreV1Api, pods: int) -> None:
    """``pods`` finished pods of other runs (what a namespace that keeps its finished pods holds)."""
    try:
        client.SchedulingV1Api(core.api_client).create_priority_class(
            {"metadata": {"name": PRIORITY_CLASS}, "value": 1000})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    _finished_pods(core, [_pod_body(f"task-{i:06d}", f"done{i}", None) for i in range(pods)])


def _seed_runs(core: client.CoreV1Api, kube: KubeApi, engine: sa.Engine, *, runs: int, prefix: str) -> None:
    """``runs`` succeeded runs with a live row and a claim each, every claim held by a finished pod (so the
    sweep must list the namespace's pods to find the holders and delete them)."""
    now = dt.datetime.now(dt.UTC)
    ids = [f"{prefix}{i}" for i in range(runs)]
    claims = [kube.create_claim(ClaimSpec(namespace=NAMESPACE, name=pvc_name(DAG, run), dag_id=DAG, run_id=run,
                                          storage_class=RWX_CLASS, size="1Gi")) for run in ids]
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO staging_volumes (namespace, pvc_name, pvc_uid, dag_id, run_id, storage_class, size, state, "
            "created_at) VALUES (:ns, :name, :uid, :dag, :run, :sc, '1Gi', 'active', :now)"),
            [{"ns": c.namespace, "name": c.name, "uid": c.uid, "dag": DAG, "run": run, "sc": RWX_CLASS, "now": now}
             for run, c in zip(ids, claims, strict=True)])
    for run in ids:
        set_run(engine, DAG, run, "success", now)
    _finished_pods(core, [_pod_body(f"holder-{run}", run, c.name) for run, c in zip(ids, claims, strict=True)])


def _pod_list_bytes(plane_kubeconfig: str) -> int:
    api = config.new_client_from_config(config_file=plane_kubeconfig)
    resp: Any = client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, _preload_content=False)
    return len(resp.data)


def _sweep(env: GcEnv, db_url: str, product: str | None) -> dict[str, Any]:
    """``leoflow-staging gc`` as the CronJob runs it (this installation's instance, adoption at once, a short
    settle so the pods are listed soon): its wall and peak RSS, and its log's summary."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    environ.update({"LEOFLOW_STAGING_DATABASE_URL": db_url, "LEOFLOW_STAGING_KUBECONFIG": str(
        env.plane.kubeconfig_path), "LEOFLOW_STAGING_INSTANCE": INSTANCE, "LEOFLOW_STAGING_GC_SETTLE_SECONDS": "2",
        "LEOFLOW_STAGING_ADOPT_MIN_AGE": "0s"})
    if product:
        environ["PYTHONPATH"] = product
    with tempfile.NamedTemporaryFile(prefix="leoflow-gcpods-", suffix=".log", delete=False) as log:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "leoflow_staging", "gc"], env=environ, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=product or None)
        rss: list[tuple[float, float, float]] = []
        sampler = threading.Thread(target=_sample_rss, args=(child.pid, started, rss), daemon=True)
        sampler.start()
        _, status, _usage = os.wait4(child.pid, 0)
        sampler.join()
        wall = time.perf_counter() - started
    lines = [json.loads(x) for x in Path(log.name).read_text(errors="replace").splitlines() if x.startswith("{")]
    summary: dict[str, Any] = next((x for x in lines if x.get("event") == "sweep_summary"), {})
    return {"exit_code": os.waitstatus_to_exitcode(status), "sweep_wall_s": round(wall, 2),
            "sweep_peak_rss_mb": max((hwm for _, _, hwm in rss), default=None),
            "finished_pods_deleted": sum(1 for x in lines if x.get("event") == "finished_pod_deleted"),
            "reclaimed_total": summary.get("reclaimed_total"), "log": log.name}


def run(*, pods: int = 20_000, runs: int = 20, products: tuple[str | None, ...] = (None,)) -> dict[str, Any]:
    """Seed ``pods`` finished pods once; then for each product (None: this checkout) seed ``runs`` held claims
    to reclaim and sweep with that product's GC."""
    with gc_env() as env:
        kubeconfig = str(env.plane.kubeconfig_path)
        db_url = create_database(env.pg, "gcpods")
        engine = sa.create_engine(db_url)
        upgrade(engine)
        create_runs_table(engine)
        core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        kube = KubeApi(make_api_client(kubeconfig, pool_size=16), timeout=30, instance=INSTANCE)
        seed_started = time.perf_counter()
        _seed_pods(core, pods)
        figures: dict[str, Any] = {"pods": pods, "runs_to_reclaim": runs, "seed_s": round(
            time.perf_counter() - seed_started, 1), "sweeps": {}}
        for n, product in enumerate(products):
            _seed_runs(core, kube, engine, runs=runs, prefix=f"p{n}r")
            figures["pod_list_json_mb"] = round(_pod_list_bytes(kubeconfig) / 2**20, 1)
            figures["sweeps"][product or "this checkout"] = _sweep(env, db_url, product)
        engine.dispose()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--product", action="append", default=[],
                        help="a checkout whose GC is measured (repeatable, in order; '.': this one); default: this one")
    args = parser.parse_args()
    products = tuple(None if p == "." else p for p in args.product) or (None,)
    print(json.dumps(run(pods=args.pods, runs=args.runs, products=products), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
