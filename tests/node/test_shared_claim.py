"""The shared-claim mode on the real node: one statically provisioned ReadWriteMany PV (what an on-premises NFS
export looks like; a hostPath PV published as RWX here, its root owned by root with mode 0755 as exports usually
are), the chart with ``storage.sharedClaim.name``, task pods as non-root uids without fsGroup, GC Jobs from the
chart's CronJob removing directories through cleanup pods (the product image).
"""

from __future__ import annotations

import datetime as dt
import json
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
from shared.naming import pvc_name
from shared.run_directory import MARKER, TRASH
from tests.node.test_node import wait_bound, wait_phase

RELEASE = "shared-leoflow-staging"
NS = "leoflow-shared"
TENANT = "team-shared"
SHARED = "team-staging"
GC_CRONJOB = f"{RELEASE}-gc"
MIB = 1 << 20


@pytest.fixture(scope="module")
def database(cluster: NodeCluster) -> Iterator[sa.Engine]:
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.create_database("node_shared"))
    create_runs_table(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def export(cluster: NodeCluster, core: client.CoreV1Api, database: sa.Engine) -> Iterator[Path]:
    """The "NFS export": a folder owned by root, mode 0755, as one static RWX PV bound to the tenant's claim."""
    assert cluster.node is not None
    root = cluster.node.workdir / f"export-{uuid.uuid4().hex[:6]}"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    pv = f"export-{root.name}"
    core.create_namespace({"metadata": {"name": TENANT, "labels": {labels.INSTANCE: RELEASE}}})
    core.create_persistent_volume({"metadata": {"name": pv}, "spec": {
        "capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
        "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(root), "type": "Directory"},
        "claimRef": {"namespace": TENANT, "name": SHARED}}})
    core.create_namespaced_persistent_volume_claim(TENANT, {"metadata": {"name": SHARED}, "spec": {
        "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
        "resources": {"requests": {"storage": "100Gi"}}}})
    wait_bound(core, TENANT, SHARED)
    cluster.install_chart(release=RELEASE, namespace=NS, database="node_shared", values=(
        "--set", "gc.suspend=true", "--set", "storage.mode=shared", "--set", f"storage.sharedClaim.name={SHARED}",
        "--set", "storage.cleanup.waitSeconds=90"))
    yield root
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    core.delete_namespace(NS)
    core.delete_namespace(TENANT)
    core.delete_persistent_volume(pv)


def _pod(cluster: NodeCluster, dag: str, run: str, script: str, *, uid: int, prefix: str) -> dict[str, Any]:
    pod = task_pod(dag, run, generate_name=f"{prefix}-", containers=[{
        "name": "task", "image": cluster.images["task"].ref, "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": {"runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": True}}])
    pod["spec"]["enableServiceLinks"] = False
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    return pod


def run_pod(cluster: NodeCluster, core: client.CoreV1Api, dag: str, run: str, script: str, *, uid: int,
            prefix: str, phase: str = "Succeeded") -> tuple[Any, str]:
    created = core.create_namespaced_pod(TENANT, _pod(cluster, dag, run, script, uid=uid, prefix=prefix))
    pod = wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=180)
    logs = core.read_namespaced_pod_log(created.metadata.name, TENANT, container="task")
    assert pod.status.phase == phase, f"{created.metadata.name} is {pod.status.phase}:\n{logs}"
    return created, logs


def _inspect(cluster: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    assert cluster.postgres is not None and cluster.plane is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env |= {"LEOFLOW_STAGING_DATABASE_URL": cluster.postgres.url("node_shared"),
            "LEOFLOW_STAGING_KUBECONFIG": str(cluster.plane.kubeconfig_path)}
    return subprocess.run([console_script(), "inspect", *args], env=env, capture_output=True, text=True,
                          timeout=240, check=False)


def disk_bytes(folder: Path) -> int:
    """What the folder's files occupy on the disk (st_blocks), as the cleanup counts it."""
    seen: set[int] = set()
    total = 0
    for p in [folder, *folder.rglob("*")]:
        st = p.lstat()
        if st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def audit(engine: sa.Engine, directory: str) -> list[tuple[str, str | None, str, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT state, delete_reason, mode, bytes_freed FROM staging_volumes "
                                    "WHERE namespace = :n AND pvc_name = :p ORDER BY id"),
                            {"n": TENANT, "p": directory}).all()
    return [(r.state, r.delete_reason, r.mode, r.bytes_freed) for r in rows]


def events(records: list[dict[str, Any]], event: str, directory: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == event and r.get("pvc") == directory]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


WRITE = """set -e
cd $LEOFLOW_STAGING_DIR
for i in 1 2 3 4; do dd if=/dev/urandom of=.part-$i.tmp bs=1M count=8 2>/dev/null; mv .part-$i.tmp part-$i; done
md5sum part-* > MANIFEST
ln -s ../{other}/secret link-out
ln -s /etc/hostname link-abs
id -u > writer
ls -a $LEOFLOW_STAGING_DIR
"""


def test_two_runs_share_the_claim_each_in_its_own_directory_through_failure_rerun_and_success(
        cluster: NodeCluster, core: client.CoreV1Api, export: Path, database: sa.Engine) -> None:
    dag = "etl-shared"
    run, other = (f"manual__{uuid.uuid4().hex[:6]}" for _ in range(2))
    mine, theirs = pvc_name(dag, run), pvc_name(dag, other)
    set_run(database, dag, run, "running")
    set_run(database, dag, other, "running")

    # The other run writes a file its neighbour's symlink will point at.
    run_pod(cluster, core, dag, other, "echo keep-me > $LEOFLOW_STAGING_DIR/secret", uid=1000, prefix="other")
    # uid 50000 (Airflow's) writes 32 MiB, and plants symlinks pointing out of its directory.
    pod, out = run_pod(cluster, core, dag, run, WRITE.format(other=theirs), uid=50000, prefix="extract")
    assert pod.metadata.labels[labels.DIRECTORY] == mine and pod.metadata.annotations[labels.PVC] == SHARED
    assert "secret" not in out and MARKER in out, out  # it sees its own directory only
    assert (export / mine / "part-4").stat().st_size == 8 * MIB
    assert (export / mine).stat().st_mode & 0o7777 == 0o1777 and (export / mine).stat().st_uid == 0
    # uid 1000 of the same run reads uid 50000's files and hands one back: no fsGroup, a root-owned 0755 export.
    _, out = run_pod(cluster, core, dag, run, "cd $LEOFLOW_STAGING_DIR && md5sum -c MANIFEST && cat writer && "
                     "echo from-1000 > reply && ls ..", uid=1000, prefix="transform")
    assert out.count(": OK") == 4 and "50000" in out, out
    assert theirs not in out, out  # '..' is the run's own directory's parent inside the mount: not the export

    # Directly mounting the shared claim is refused inside the apiserver.
    direct = task_pod(dag, run, opt_in=False, generate_name="direct-", volumes=[
        {"name": "all", "persistentVolumeClaim": {"claimName": SHARED}}], containers=[
        {"name": "t", "image": cluster.images["task"].ref, "volumeMounts": [{"name": "all", "mountPath": "/all"}]}])
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(TENANT, direct)
    assert refused.value.status in (403, 422) and "mounts the shared staging claim" in str(refused.value.body)

    # Failed: kept; clear + re-run finds the bytes.
    set_run(database, dag, run, "failed", now())
    records = cluster.gc_job(NS, "gc-failed", cronjob=GC_CRONJOB)
    assert events(records, "kept_failed_run", mine), records
    # The on-call looks at the failed run's files: a read-only pod on its directory only, admitted by the policy.
    look = _inspect(cluster, dag, run, "--image", cluster.images["product"].ref, "--uid", "50000", "--ttl", "10m")
    assert look.returncode == 0 and "part-4" in look.stdout and "secret" not in look.stdout, look.stdout + look.stderr
    write = cluster.kubectl("-n", TENANT, "exec", pod_name(mine), "--", "sh", "-c", "echo x > /staging/new",
                            check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    set_run(database, dag, run, "running", None)
    _, out = run_pod(cluster, core, dag, run, "cd $LEOFLOW_STAGING_DIR && md5sum -c MANIFEST && cat reply",
                     uid=50000, prefix="rerun")
    assert out.count(": OK") == 4 and "from-1000" in out, out

    # Success: the directory goes, through a cleanup pod; the disk space comes back; the symlinks' targets stay.
    set_run(database, dag, run, "success", now())
    held = disk_bytes(export / mine)
    start = time.monotonic()
    records = cluster.gc_job(NS, "gc-success", cronjob=GC_CRONJOB, timeout=240)
    assert [r["pod"] for r in events(records, "inspect_pod_deleted", mine)] == [pod_name(mine)], records
    [reclaimed] = events(records, "reclaimed", mine)
    seconds = time.monotonic() - start
    assert reclaimed["reason"] == "run_succeeded" and reclaimed["bytes_freed"] == held, (reclaimed, held)
    assert not (export / mine).exists() and not any(p.name == mine for p in export.rglob(mine))
    assert (export / theirs / "secret").read_text() == "keep-me\n"  # the planted link's target survived
    assert Path("/etc/hostname").exists()
    [(state, reason, mode, freed)] = audit(database, mine)
    assert (state, reason, mode, freed) == ("deleted", "run_succeeded", "shared", held)
    assert audit(database, theirs)[0][:3] == ("active", None, "shared")  # the other run is untouched
    print(f"\nFIGURE shared-claim success reclaim freed {held / MIB:.1f} MiB in a GC Job of {seconds:.1f} s")


def test_a_cleanup_pod_killed_mid_way_is_finished_by_the_next_sweep(
        cluster: NodeCluster, core: client.CoreV1Api, export: Path, database: sa.Engine) -> None:
    dag, run = "etl-kill", f"manual__{uuid.uuid4().hex[:6]}"
    directory = pvc_name(dag, run)
    set_run(database, dag, run, "running")
    # Many small files: a removal that takes long enough to be killed in.
    run_pod(cluster, core, dag, run, "cd $LEOFLOW_STAGING_DIR && for d in $(seq 1 40); do mkdir d$d; "
            "for f in $(seq 1 250); do echo $d-$f > d$d/f$f; done; done", uid=50000, prefix="many")
    held = disk_bytes(export / directory)
    set_run(database, dag, run, "success", now())
    name = "gc-kill"
    cluster.kubectl("-n", NS, "create", "job", name, f"--from=cronjob/{GC_CRONJOB}")
    trash = export / TRASH / directory
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline:
        for pod in core.list_namespaced_pod(TENANT, label_selector=labels.CLEANUP).items:
            if pod.status.phase == "Running" or trash.exists():
                core.delete_namespaced_pod(pod.metadata.name, TENANT, grace_period_seconds=0)
                killed = (pod.metadata.name, trash.exists())
        time.sleep(0.05)
    assert killed is not None, "no cleanup pod started"
    done = cluster.kubectl("-n", NS, "wait", "--for=condition=complete", f"job/{name}", "--timeout=200s",
                           timeout=210, check=False)
    first = [json.loads(line) for line in cluster.kubectl("-n", NS, "logs", f"job/{name}").stdout.splitlines()
             if line.startswith("{")]
    second = [] if events(first, "reclaimed", directory) else cluster.gc_job(NS, "gc-kill-2", cronjob=GC_CRONJOB,
                                                                             timeout=240)
    assert done.returncode == 0 or second, first
    [reclaimed] = events(first, "reclaimed", directory) + events(second, "reclaimed", directory)
    assert reclaimed["bytes_freed"] == held, (reclaimed, held)
    assert not (export / directory).exists() and not trash.exists()
    assert audit(database, directory)[0][:4] == ("deleted", "run_succeeded", "shared", held)
    print(f"\nFIGURE shared-claim cleanup pod {killed[0]} killed mid-way (renamed away already: {killed[1]}); "
          f"finished by {'the same' if not second else 'the next'} sweep: {reclaimed['detail']}")
