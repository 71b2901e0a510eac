"""``make demo`` on a machine where the real node can run: a DAG run's life with real bytes on /staging.

The chart is installed with the product image; task pods (busybox) write and verify files; the
orchestrator's runs table is written as Leoflow does; the GC runs as Jobs made from the chart's
CronJob, and its JSON lines are shown. Every promise of the design record is shown: a retry and a
clear+re-run find the files, a failed run is kept for its TTL (24 h) and reclaimed as ``ttl_expired``
after it, a success is reclaimed at once and the disk comes back, and a pod is refused with a clear
message when no ReadWriteMany class exists. The node and everything else are stopped at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from kubernetes import client

from devenv.assets import ensure_assets
from devenv.cluster import NodeCluster
from devenv.narrate import BOLD, DIM, RESET, say, show
from devenv.orchestrator import create_runs_table, set_run
from devenv.pods import task_pod
from devenv.provisioner import STORAGE_CLASS
from shared import labels

NS, TENANT, DAG = "leoflow-staging", "team-etl", "etl_daily"
EXTRACT = """set -e; D=$LEOFLOW_STAGING_DIR/extract; mkdir -p $D
for i in 1 2 3 4; do
  dd if=/dev/urandom of=$D/.part-$i.tmp bs=1M count=16 2>/dev/null; mv $D/.part-$i.tmp $D/part-$i
done
cd $D && md5sum part-* > .MANIFEST.tmp && mv .MANIFEST.tmp MANIFEST
echo "extract wrote $(du -sm $D | cut -f1) MiB to $D: $(ls $D | tr '\\n' ' ')"
"""
VERIFY = "cd $LEOFLOW_STAGING_DIR/extract && md5sum -c MANIFEST"


class NodeDemo:
    def __init__(self, cluster: NodeCluster, engine: sa.Engine) -> None:
        self.cluster = cluster
        self.engine = engine
        self.core = client.CoreV1Api(cluster.api)

    def run_state(self, run: str, state: str, end: dt.datetime | None = None) -> None:
        set_run(self.engine, DAG, run, state, end)
        print(f"    {DIM}orchestrator: run {run} is now {state}{RESET}")

    def task(self, run: str, name: str, script: str) -> str:
        """Run one task pod to its end; show its log; return its staging claim's name."""
        pod = task_pod(DAG, run, generate_name=f"{name}-", containers=[{
            "name": name, "image": self.cluster.images["task"].ref, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script]}])
        pod["spec"]["enableServiceLinks"] = False
        made = self.core.create_namespaced_pod(TENANT, pod)
        pod_name = made.metadata.name
        deadline = time.monotonic() + 180
        while (phase := self.core.read_namespaced_pod(pod_name, TENANT).status.phase) not in ("Succeeded", "Failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pod_name} is still {phase}")
            time.sleep(0.3)
        logs = self.core.read_namespaced_pod_log(pod_name, TENANT)
        show(f"pod {pod_name}: {phase}, /staging = PVC {made.metadata.annotations[labels.PVC]}")
        show(logs)
        claim: str = made.metadata.annotations[labels.PVC]
        return claim

    def gc(self, name: str) -> None:
        records = self.cluster.gc_job(NS, name)
        show(f"kubectl logs job/{name}:")
        for record in records:
            keep = {k: record[k] for k in ("event", "pod", "phase", "pvc", "reason", "why", "detail",
                                           "reclaimed_total", "kept") if record.get(k) is not None}
            show("  " + json.dumps(keep))

    def claim_going(self, claim: str) -> bool:
        """The claim is gone, or Terminating (its finished task pod still holds it)."""
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim, TENANT)
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return pvc.metadata.deletion_timestamp is not None

    def folder(self, claim: str) -> Path | None:
        found = [p for p in self.cluster.data_dir.iterdir() if p.name.endswith(f"_{TENANT}_{claim}")]
        return found[0] if found else None


def play(cluster: NodeCluster) -> None:
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.create_database("leoflow"))
    create_runs_table(engine)
    demo = NodeDemo(cluster, engine)
    say("Installing the chart with helm, as docs/operators.md says (product image, builtin certificates)")
    seconds = cluster.install_chart(release="leoflow-staging", namespace=NS, database="leoflow",
                                    values=("--set", "gc.suspend=true", "--set", "config.defaultSize=1Gi"))
    show(f"webhook Ready in {seconds:.0f} s:")
    show(cluster.kubectl("-n", NS, "get", "deploy,pods,cronjob").stdout)
    demo.core.create_namespace({"metadata": {"name": TENANT, "labels": {labels.INSTANCE: "leoflow-staging"}}})
    run = f"manual__2026-11-28T10:00:00+00:00-{uuid.uuid4().hex[:4]}"

    say("A run that failed yesterday: its task wrote to /staging; the run ended 25 h ago (its TTL is 24 h)")
    old_run = f"scheduled__2026-11-27T10:00:00+00:00-{uuid.uuid4().hex[:4]}"
    demo.run_state(old_run, "running")
    old_claim = demo.task(old_run, "extract", "echo partial > $LEOFLOW_STAGING_DIR/part-1 && exit 1")
    demo.run_state(old_run, "failed", dt.datetime.now(dt.UTC) - dt.timedelta(hours=25))

    say(f"Run {run}: the extract task writes 64 MiB to /staging (temporary name, then rename)")
    demo.run_state(run, "running")
    claim = demo.task(run, "extract", EXTRACT)
    pvc = demo.core.read_namespaced_persistent_volume_claim(claim, TENANT)
    show(f"PVC {claim}: {pvc.status.phase}, {pvc.spec.access_modes[0]}, class {pvc.spec.storage_class_name}, "
         f"uid {pvc.metadata.uid}")

    say("The transform task verifies every file, then fails: the run is marked failed")
    demo.task(run, "transform", VERIFY + " && echo 'transform: bad input, giving up' && exit 1")
    demo.run_state(run, "failed", dt.datetime.now(dt.UTC))
    say("A GC sweep keeps the failed run's volume for its TTL (24 h), and reclaims yesterday's (ttl_expired)")
    demo.gc("gc-after-failure")
    show(f"yesterday's claim {old_claim}: "
         f"{'gone or going' if demo.claim_going(old_claim) else 'still there'}")

    say("Clear + re-run: the run is running again; the new transform finds the upstream files")
    demo.run_state(run, "running", None)
    demo.task(run, "transform", VERIFY + " && echo 'transform: all upstream files verified'")
    show(f"same PVC, same uid: {demo.core.read_namespaced_persistent_volume_claim(claim, TENANT).metadata.uid}")

    say("The run succeeds: the next sweep reclaims the volume, and the disk comes back")
    demo.run_state(run, "success", dt.datetime.now(dt.UTC))
    folder = demo.folder(claim)
    used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder else 0
    show(f"on the node: {folder} holds {used / (1 << 20):.0f} MiB")
    show("the finished task pods are left behind, as orchestrators often do; they would keep the claim")
    demo.gc("gc-after-success")
    deadline = time.monotonic() + 30
    while folder is not None and folder.exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    gone = folder is None or not folder.exists()
    show(f"the folder is {'gone' if gone else 'still there'}: {used / (1 << 20):.0f} MiB returned to the node")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT pvc_name, state, delete_reason FROM staging_volumes")).all()
    show("staging_volumes: " + "; ".join(f"{r.pvc_name} {r.state} {r.delete_reason}" for r in rows))

    say("No ReadWriteMany StorageClass (the platform team marks the only one as not RWX): a new run's pod is "
        "refused at once, with the reason")
    storage = client.StorageV1Api(cluster.api)
    storage.patch_storage_class(STORAGE_CLASS, {"metadata": {"annotations": {labels.RWX_CLASS: "false"}}})
    try:
        demo.core.create_namespaced_pod(TENANT, task_pod(DAG, f"manual__no-rwx-{uuid.uuid4().hex[:4]}"))
        show("unexpected: the pod was admitted")
    except client.ApiException as exc:
        show(json.loads(exc.body)["message"])
    finally:
        storage.patch_storage_class(STORAGE_CLASS, {"metadata": {"annotations": {labels.RWX_CLASS: "true"}}})
    engine.dispose()


def main() -> int:
    """Run the node demo; return 0, or raise so that the caller can fall back to the API-level demo."""
    assets = ensure_assets(node=True)
    started = time.monotonic()
    cluster = NodeCluster(assets=assets, workdir=Path(tempfile.mkdtemp(prefix="leoflow-demo-node-")),
                          say=lambda m: print(f"    {DIM}{m}{RESET}", flush=True))
    say("Starting a real node: containerd, kubelet, kube-proxy, the RWX provisioner (cold: minutes; warm: ~30 s)")
    cluster.start()
    try:
        play(cluster)
    finally:
        say(f"{BOLD}Done in {time.monotonic() - started:.0f} s. Stopping the node and undoing its host changes.")
        left = cluster.stop()
        if left:
            show(f"could not undo: {left}")
    return 0


def node_possible() -> str | None:
    """Why the node cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    missing = [b for b in ("containerd", "runc", "ctr", "iptables", "kubectl") if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} not installed (hack/ensure-node-packages.sh)"
    if Path("/sys/class/net/leoflow0").exists():
        return "a dev node is already up (make dev-down first)"
    return None


