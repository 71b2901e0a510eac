"""Real bytes through /staging: the design record's promises on running pods (chart-installed webhook and GC).

Task pods write and read with the task image (busybox); the runs table is written the way the
orchestrator does (state and end time). The GC runs as Jobs made from the chart's CronJob, which is
suspended so that only these Jobs sweep.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.cluster import NodeCluster
from devenv.orchestrator import create_runs_table, set_run
from devenv.pods import task_pod
from devenv.webhook import console_script
from leoflow_staging.inspection import pod_name
from shared import labels
from tests.node.test_node import wait_bound, wait_phase

RELEASE = "bytes-leoflow-staging"
NS = "leoflow-bytes"
TENANT = "team-bytes"
GC_CRONJOB = f"{RELEASE}-gc"
MIB = 1 << 20

# The extract writes 8 files of 8 MiB the way docs/dag-authors.md teaches: a temporary name in the same
# folder, then a rename; then a checksum manifest, itself written the same way.
EXTRACT = """set -e
D=$LEOFLOW_STAGING_DIR/extract
mkdir -p $D
for i in 1 2 3 4 5 6 7 8; do
  dd if=/dev/urandom of=$D/.part-$i.tmp bs=1M count=8 2>/dev/null
  mv $D/.part-$i.tmp $D/part-$i
done
cd $D && md5sum part-* > .MANIFEST.tmp && mv .MANIFEST.tmp MANIFEST
echo wrote $(du -sk $D | cut -f1) KiB
"""
VERIFY = "cd $LEOFLOW_STAGING_DIR/extract && md5sum -c MANIFEST"


@pytest.fixture(scope="module")
def database(cluster: NodeCluster) -> Iterator[sa.Engine]:
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.create_database("node_bytes"))
    create_runs_table(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def release(cluster: NodeCluster, core: client.CoreV1Api, database: sa.Engine) -> Iterator[str]:
    core.create_namespace({"metadata": {"name": TENANT, "labels": {labels.INSTANCE: RELEASE}}})  # served by it
    cluster.install_chart(release=RELEASE, namespace=NS, database="node_bytes",
                    values=("--set", "gc.suspend=true", "--set", "config.defaultSize=1Gi",
                            "--set", "gc.settleSeconds=20"))
    yield TENANT
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    core.delete_namespace(NS)
    core.delete_namespace(TENANT)


def pod_for(cluster: NodeCluster, dag: str, run: str, script: str, prefix: str) -> dict[str, Any]:
    pod = task_pod(dag, run, generate_name=f"{prefix}-", containers=[{
        "name": "task", "image": cluster.images["task"].ref, "imagePullPolicy": "Never",
        "command": ["sh", "-c", script]}])
    pod["spec"]["enableServiceLinks"] = False
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    return pod


def run_pod(cluster: NodeCluster, core: client.CoreV1Api, dag: str, run: str, script: str, prefix: str,
            phase: str = "Succeeded") -> tuple[Any, str]:
    created = core.create_namespaced_pod(TENANT, pod_for(cluster, dag, run, script, prefix))
    pod = wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=180)
    logs = core.read_namespaced_pod_log(created.metadata.name, TENANT)
    assert pod.status.phase == phase, f"{created.metadata.name} is {pod.status.phase}:\n{logs}"
    return created, logs


def folder_of(cluster: NodeCluster, claim: str) -> Path:
    [folder] = [p for p in cluster.data_dir.iterdir() if p.name.endswith(f"_{TENANT}_{claim}")]
    return folder


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def delete_pods_of(core: client.CoreV1Api, run: str) -> None:
    """What a dispatcher does with finished task pods (a finished pod still holds its claim)."""
    for pod in core.list_namespaced_pod(TENANT).items:
        if (pod.metadata.annotations or {}).get(labels.RUN_ID) == run:
            core.delete_namespaced_pod(pod.metadata.name, TENANT, grace_period_seconds=0)


def events(records: list[dict[str, Any]], event: str, pvc: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == event and r.get("pvc") == pvc]


def wait_gone(cluster: NodeCluster, core: client.CoreV1Api, claim: str, pv: str, folder: Path,
              timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pvcs = [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(TENANT).items]
        pvs = [p.metadata.name for p in core.list_persistent_volume().items]
        if claim not in pvcs and pv not in pvs and not folder.exists():
            return
        assert time.monotonic() < deadline, (claim in pvcs, pv in pvs, folder.exists())
        time.sleep(0.3)


def audit(engine: sa.Engine, claim: str) -> list[tuple[str, str | None, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT state, delete_reason, pvc_uid FROM staging_volumes "
                                    "WHERE namespace = :n AND pvc_name = :p ORDER BY id"),
                            {"n": TENANT, "p": claim}).all()
    return [(r.state, r.delete_reason, r.pvc_uid) for r in rows]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_a_run_passes_bytes_keeps_them_when_failed_finds_them_on_rerun_and_frees_them_on_success(
        cluster: NodeCluster, core: client.CoreV1Api, release: str, database: sa.Engine) -> None:
    dag, run = "etl-bytes", f"manual__2026-11-28T10:00:00+00:00-{uuid.uuid4().hex[:4]}"
    set_run(database, dag, run, "running")

    extract, out = run_pod(cluster, core, dag, run, EXTRACT, "extract")
    claim = extract.metadata.annotations[labels.PVC]
    pvc = wait_bound(core, TENANT, claim)
    uid, pv = pvc.metadata.uid, pvc.spec.volume_name
    folder = folder_of(cluster, claim)
    assert disk_bytes(folder / "extract") >= 64 * MIB, out

    # The transform reads every file, then fails; the run is marked failed as the orchestrator does.
    _, out = run_pod(cluster, core, dag, run, VERIFY + " && echo transform failed >&2 && exit 1", "transform",
                     phase="Failed")
    assert out.count(": OK") == 8, out
    set_run(database, dag, run, "failed", now())
    records = cluster.gc_job(NS, "gc-failed", cronjob=GC_CRONJOB)
    [kept] = events(records, "kept_failed_run", claim)
    assert kept["run_id"] == run and "kept until" in kept["why"], kept
    assert core.read_namespaced_persistent_volume_claim(claim, TENANT).metadata.uid == uid

    # Clear + re-run: the run is running again (end time cleared); a new transform gets the same claim.
    set_run(database, dag, run, "running", None)
    rerun, out = run_pod(cluster, core, dag, run, VERIFY, "transform")
    assert rerun.metadata.annotations[labels.PVC] == claim
    assert core.read_namespaced_persistent_volume_claim(claim, TENANT).metadata.uid == uid
    assert out.count(": OK") == 8, out

    # Success frees the disk: claim, PV and the folder on the node are gone; the audit row says why.
    set_run(database, dag, run, "success", now())
    returned = disk_bytes(folder)
    # The finished task pods are left behind, as orchestrators often do: the GC deletes them (they can never
    # run again, yet kube-controller-manager counts them as users of the claim) and finishes the reclaim.
    records = cluster.gc_job(NS, "gc-success", cronjob=GC_CRONJOB)
    deleted = sorted(r["phase"] for r in records if r.get("event") == "finished_pod_deleted" and r["pvc"] == claim)
    assert deleted == ["Failed", "Succeeded", "Succeeded"], records
    [reclaimed] = events(records, "reclaimed", claim)
    assert reclaimed["reason"] == "run_succeeded", records
    wait_gone(cluster, core, claim, pv, folder)
    assert audit(database, claim) == [("deleted", "run_succeeded", uid)]
    print(f"\nFIGURE success reclaim returned {returned / MIB:.1f} MiB to the node")


def test_a_failed_run_past_its_ttl_is_reclaimed(cluster: NodeCluster, core: client.CoreV1Api, release: str,
                                                database: sa.Engine) -> None:
    dag, run = "etl-ttl", f"scheduled__{uuid.uuid4().hex[:6]}"
    set_run(database, dag, run, "running")
    pod, _ = run_pod(cluster, core, dag, run, "dd if=/dev/zero of=$LEOFLOW_STAGING_DIR/x bs=1M count=4", "t")
    claim = pod.metadata.annotations[labels.PVC]
    pv = wait_bound(core, TENANT, claim).spec.volume_name
    folder = folder_of(cluster, claim)
    set_run(database, dag, run, "failed", now() - dt.timedelta(hours=25))  # the default TTL is 24 h
    records = cluster.gc_job(NS, "gc-ttl", cronjob=GC_CRONJOB)
    [reclaimed] = events(records, "reclaimed", claim)
    assert reclaimed["reason"] == "ttl_expired" and reclaimed["since_run_end_s"] >= 25 * 3600
    wait_gone(cluster, core, claim, pv, folder)
    assert [r[:2] for r in audit(database, claim)] == [("deleted", "ttl_expired")]


def test_a_pod_still_running_when_its_run_ends_keeps_working(
        cluster: NodeCluster, core: client.CoreV1Api, release: str, database: sa.Engine) -> None:
    dag, run = "etl-live", f"manual__{uuid.uuid4().hex[:6]}"
    set_run(database, dag, run, "running")
    script = ("D=$LEOFLOW_STAGING_DIR; i=0; while [ ! -e $D/stop ]; do "
              "dd if=/dev/urandom of=$D/.live.tmp bs=64k count=4 2>/dev/null && mv $D/.live.tmp $D/live && "
              "md5sum $D/live >/dev/null && i=$((i+1)) && echo $i > $D/.count.tmp && mv $D/.count.tmp $D/count "
              "|| exit 3; sleep 0.1; done; echo rounds $i")
    created = core.create_namespaced_pod(TENANT, pod_for(cluster, dag, run, script, "live"))
    name = created.metadata.name
    claim = created.metadata.annotations[labels.PVC]
    pv = wait_bound(core, TENANT, claim).spec.volume_name
    wait_phase(core, TENANT, name, {"Running"})
    folder = folder_of(cluster, claim)

    set_run(database, dag, run, "success", now())
    records = cluster.gc_job(NS, "gc-live-1", cronjob=GC_CRONJOB)
    [held] = events(records, "terminating", claim)
    assert f"{name} (Running)" in held["detail"], held  # the GC names the pod that holds the claim, never deletes it
    assert core.read_namespaced_persistent_volume_claim(claim, TENANT).metadata.deletion_timestamp is not None
    before = int((folder / "count").read_text())
    time.sleep(3)
    after = int((folder / "count").read_text())
    assert after > before, "the pod stopped writing while its claim was Terminating"
    assert core.read_namespaced_pod(name, TENANT).status.phase == "Running"

    (folder / "stop").touch()  # the task ends on its own
    wait_phase(core, TENANT, name, {"Succeeded"})
    assert core.read_namespaced_pod_log(name, TENANT).startswith("rounds ")
    # The pod has finished: the GC deletes it and finishes the reclaim.
    records = cluster.gc_job(NS, "gc-live-2", cronjob=GC_CRONJOB)
    [reclaimed] = events(records, "reclaimed", claim)
    assert reclaimed["reason"] == "run_succeeded"
    wait_gone(cluster, core, claim, pv, folder)


def test_two_runs_never_see_each_others_files(cluster: NodeCluster, core: client.CoreV1Api, release: str,
                                              database: sa.Engine) -> None:
    dag = "etl-iso"
    runs = [f"a-{uuid.uuid4().hex[:4]}", f"b-{uuid.uuid4().hex[:4]}"]
    claims = []
    for run in runs:
        set_run(database, dag, run, "running")
        pod, _ = run_pod(cluster, core, dag, run, f"echo {run} > $LEOFLOW_STAGING_DIR/{run}.txt", "w")
        claims.append(pod.metadata.annotations[labels.PVC])
    assert claims[0] != claims[1]
    for run in runs:
        _, out = run_pod(cluster, core, dag, run, "ls $LEOFLOW_STAGING_DIR", "ls")
        assert out.split() == [f"{run}.txt"]
    # A pod of run a that names run b's claim is refused.
    intruder = pod_for(cluster, dag, runs[0], "cat /other/*", "intruder")
    intruder["spec"]["volumes"] = [{"name": "other", "persistentVolumeClaim": {"claimName": claims[1]}}]
    intruder["spec"]["containers"][0]["volumeMounts"] = [{"name": "other", "mountPath": "/other"}]
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(TENANT, intruder)
    assert "another run's staging PVC" in refused.value.body, refused.value.body


def test_a_retry_after_a_kill_mid_write_finds_no_half_written_file(
        cluster: NodeCluster, core: client.CoreV1Api, release: str, database: sa.Engine) -> None:
    dag, run = "etl-retry", f"manual__{uuid.uuid4().hex[:6]}"
    set_run(database, dag, run, "running")
    # Each attempt writes under its own temporary name (the pod's name, as mkstemp would in the docs'
    # snippet), then renames: a retry never shares a half-written file with an attempt that died.
    write = ('D=$LEOFLOW_STAGING_DIR; if [ -e $D/out ]; then echo "final file present"; else echo "no final file"; '
             'fi; T=$D/.out.$HOSTNAME.tmp; dd if=/dev/urandom of=$T bs=1M count={n} 2>/dev/null && mv $T $D/out '
             '&& echo done')
    # Attempt 1 writes slowly (a 1 MiB block at a time, with pauses) and is killed mid-write.
    slow = ('D=$LEOFLOW_STAGING_DIR; T=$D/.out.$HOSTNAME.tmp; for i in $(seq 1 300); do '
            'dd if=/dev/urandom bs=1M count=1 2>/dev/null; sleep 0.1; done > $T && mv $T $D/out')
    first = core.create_namespaced_pod(TENANT, pod_for(cluster, dag, run, slow, "try1"))
    claim = first.metadata.annotations[labels.PVC]
    wait_bound(core, TENANT, claim)
    folder = folder_of(cluster, claim)
    partial = folder / f".out.{first.metadata.name}.tmp"
    deadline = time.monotonic() + 60
    while not partial.exists() or partial.stat().st_size < 2 * MIB:
        assert time.monotonic() < deadline, "attempt 1 never started writing"
        time.sleep(0.2)
    # The kill: the shell ignores SIGTERM, so after the 1 s grace period the kubelet SIGKILLs it mid-write.
    core.delete_namespaced_pod(first.metadata.name, TENANT)
    deadline = time.monotonic() + 60
    while any(p.metadata.name == first.metadata.name for p in core.list_namespaced_pod(TENANT).items):
        assert time.monotonic() < deadline, "attempt 1 was not killed"
        time.sleep(0.2)
    assert not (folder / "out").exists() and partial.exists()
    # Attempt 2 (the retry) sees no final file, writes its own and renames it.
    _, out = run_pod(cluster, core, dag, run, write.format(n=3), "try2")
    assert out.split("\n")[0] == "no final file" and "done" in out, out
    assert (folder / "out").stat().st_size == 3 * MIB


def test_dag_author_snippets_run_verbatim_in_a_pod(cluster: NodeCluster, core: client.CoreV1Api, release: str,
                                                   database: sa.Engine) -> None:
    """The Python snippets of docs/dag-authors.md, in order, in a task pod with the product image's python3."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dag-authors.md").read_text()
    snippets = [block.split("\n", 1)[1] for block in doc.split("```")[1::2] if block.startswith("python")]
    assert len(snippets) >= 2
    program = "\n".join(snippets) + "\nprint(open(STAGING / 'extract/orders.csv').read(), end='')\n"
    dag, run = "etl-docs", f"manual__{uuid.uuid4().hex[:6]}"
    set_run(database, dag, run, "running")
    pod = task_pod(dag, run, generate_name="docs-", containers=[{
        "name": "task", "image": cluster.images["product"].ref, "imagePullPolicy": "Never",
        "command": ["python3", "-c", program]}])
    pod["spec"]["enableServiceLinks"] = False
    created = core.create_namespaced_pod(TENANT, pod)
    done = wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=120)
    logs = core.read_namespaced_pod_log(created.metadata.name, TENANT)
    assert done.status.phase == "Succeeded", logs
    assert logs == "id,amount\n1,9.50\n"
    claim = created.metadata.annotations[labels.PVC]
    leftovers = [p.name for p in (folder_of(cluster, claim) / "extract").iterdir()]
    assert leftovers == ["orders.csv"]  # no temporary file left behind
    cluster.kubectl("-n", TENANT, "delete", "pod", created.metadata.name, "--wait=false")


def test_no_pod_creation_fails_while_a_webhook_pod_dies_and_the_deployment_restarts(
        cluster: NodeCluster, core: client.CoreV1Api, release: str, database: sa.Engine) -> None:
    """>= 200 task pod creations across 10 runs; one webhook pod force-deleted, then a rollout restart."""
    import concurrent.futures
    import threading

    runs = [f"burst-{i}-{uuid.uuid4().hex[:4]}" for i in range(10)]
    for run in runs:
        set_run(database, "etl-burst", run, "running")
    failures: list[str] = []
    admitted: list[Any] = []
    lock = threading.Lock()
    apps = client.AppsV1Api(cluster.api)

    def create(i: int) -> None:
        pod = pod_for(cluster, "etl-burst", runs[i % 10], "true", f"b{i}")
        pod["spec"]["nodeSelector"] = {"leoflow.io/no-such-node": "x"}  # admission is measured, not running
        try:
            made = core.create_namespaced_pod(TENANT, pod)
        except client.ApiException as exc:
            with lock:
                failures.append(f"{exc.status}: {exc.body[:300]}")
            return
        with lock:
            admitted.append(made)

    total = 240
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        futures = []
        for i in range(total):
            futures.append(pool.submit(create, i))
            if i == 40:
                victim = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=webhook").items[0]
                core.delete_namespaced_pod(victim.metadata.name, NS, grace_period_seconds=0)
            if i == 100:
                cluster.kubectl("-n", NS, "rollout", "restart", f"deploy/{RELEASE}-webhook")
            time.sleep(0.15)  # spread the burst over the restart (~35 s)
        concurrent.futures.wait(futures)
    cluster.kubectl("-n", NS, "rollout", "status", f"deploy/{RELEASE}-webhook", "--timeout=180s")
    dep = apps.read_namespaced_deployment(f"{RELEASE}-webhook", NS)
    print(f"\nFIGURE burst: {total} creations, {len(failures)} failed, {len(admitted)} admitted; "
          f"webhook generation {dep.metadata.generation}")
    # No pod was admitted without its volume (failurePolicy Fail: a pod is either patched or refused).
    unpatched = [p.metadata.name for p in admitted
                 if labels.PVC not in (p.metadata.annotations or {})
                 or not any(v.name == "leoflow-staging" for v in p.spec.volumes or [])]
    assert unpatched == []
    assert failures == [], failures[:5]
    for run in runs:
        delete_pods_of(core, run)


def _inspect(cluster: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    assert cluster.postgres is not None and cluster.plane is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env |= {"LEOFLOW_STAGING_DATABASE_URL": cluster.postgres.url("node_bytes"),
            "LEOFLOW_STAGING_KUBECONFIG": str(cluster.plane.kubeconfig_path)}
    return subprocess.run([console_script(), "inspect", *args], env=env, capture_output=True, text=True,
                          timeout=240, check=False)


def test_inspect_reads_a_failed_runs_files_read_only_and_never_keeps_its_volume(
        cluster: NodeCluster, core: client.CoreV1Api, release: str, database: sa.Engine) -> None:
    """docs/operators.md, "A run failed: what now": a task running as uid 1000 wrote a file only it may read,
    then failed; `inspect --uid 1000` lists the files, the shell it names reads that file and cannot write;
    when the run's volume is reclaimed the GC deletes the running inspect pod, and `inspect` prints the audit."""
    dag, run = "etl-inspect", f"manual__{uuid.uuid4().hex[:6]}"
    set_run(database, dag, run, "running")
    writer = pod_for(cluster, dag, run, "umask 077 && mkdir -p $LEOFLOW_STAGING_DIR/out && "
                     "echo private-result > $LEOFLOW_STAGING_DIR/out/result.json && "
                     "dd if=/dev/zero of=$LEOFLOW_STAGING_DIR/out/big.bin bs=1M count=3 2>/dev/null && exit 1",
                     "extract")
    writer["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000}
    created = core.create_namespaced_pod(TENANT, writer)
    assert wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=180).status.phase \
        == "Failed"
    claim = created.metadata.annotations[labels.PVC]
    set_run(database, dag, run, "failed", now())

    image = cluster.images["product"].ref
    first = _inspect(cluster, dag, run, "--image", image, "--uid", "1000", "--ttl", "10m")
    assert first.returncode == 0, first.stdout + first.stderr
    name = pod_name(claim)
    assert f"started pod {TENANT}/{name}" in first.stdout
    assert "2 files, 3.0 MiB on /staging" in first.stdout, first.stdout
    largest = first.stdout.split("largest:")[1].splitlines()[1]
    assert largest.strip().startswith("3.0 MiB") and largest.endswith("out/big.bin"), first.stdout
    assert f"kubectl -n {TENANT} exec -it {name} -- sh" in first.stdout
    read = cluster.kubectl("-n", TENANT, "exec", name, "--", "cat", "/staging/out/result.json")
    assert read.stdout.strip() == "private-result"  # mode 0600, read as the uid that wrote it
    write = cluster.kubectl("-n", TENANT, "exec", name, "--", "sh", "-c", "echo x > /staging/out/new", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    again = _inspect(cluster, dag, run, "--image", image, "--uid", "1000")
    assert again.returncode == 0 and f"reusing pod {TENANT}/{name}" in again.stdout, again.stdout + again.stderr

    # The run succeeds after a clear: its volume is reclaimed; the running inspect pod does not keep it.
    set_run(database, dag, run, "success", now())
    records = cluster.gc_job(NS, "gc-inspect", cronjob=GC_CRONJOB)
    [gone] = [r for r in records if r.get("event") == "inspect_pod_deleted" and r["pod"] == name]
    assert gone["phase"] == "Running" and gone["reason"] == "run_succeeded", gone
    [reclaimed] = events(records, "reclaimed", claim)
    assert reclaimed["reason"] == "run_succeeded", records
    assert [r[:2] for r in audit(database, claim)] == [("deleted", "run_succeeded")]
    after = _inspect(cluster, dag, run, "--image", image)
    assert after.returncode == 1 and "was reclaimed at" in after.stderr and "(run_succeeded)" in after.stderr, (
        after.stdout + after.stderr)
