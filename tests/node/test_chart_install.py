"""The chart installed for real, exactly as docs/operators.md "Install" says, with the product image on the node.

One release goes through its whole life in order (install, an admitted task pod that writes to
/staging, `helm test`, upgrade, the GC CronJob by hand and by schedule, uninstall), so the steps
share one module-scoped release.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from certs.bundle import split_pem
from devenv.assets import REPO
from devenv.cluster import CHART, NodeCluster
from devenv.images import archive_digests
from devenv.pods import task_pod
from devenv.provisioner import STORAGE_CLASS
from shared import labels
from tests.node.test_node import wait_bound, wait_phase

RELEASE = "leoflow-staging"
NS = "leoflow-staging"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def tenant(core: client.CoreV1Api) -> Iterator[str]:
    name = f"tenant-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": {labels.INSTANCE: RELEASE}}})  # served by it
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def release(cluster: NodeCluster, core: client.CoreV1Api, node_db: str, tenant: str) -> Iterator[dict[str, Any]]:
    """`helm install --wait` as the operators' doc says: namespace, database Secret, install, rollout."""
    TIMINGS["helm_install_to_ready_s"] = cluster.install_chart(
        release=RELEASE, namespace=NS, database=node_db, values=("--set", f"test.namespace={tenant}"))
    cluster.kubectl("-n", NS, "rollout", "status", "deploy/leoflow-staging-webhook", "--timeout=120s")
    print(f"\nFIGURE helm install --wait to webhook Ready: {TIMINGS['helm_install_to_ready_s']:.1f}s")
    yield {"tenant": tenant}
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    core.delete_namespace(NS)


def staging_pod(cluster: NodeCluster, dag: str, run: str, script: str) -> dict[str, Any]:
    pod = task_pod(dag, run, containers=[{"name": "task", "image": cluster.images["task"].ref,
                                          "imagePullPolicy": "Never", "command": ["sh", "-c", script]}],
                   generate_name="extract-")
    pod["spec"]["enableServiceLinks"] = False
    return pod


def test_install_runs_two_webhook_replicas_behind_the_service(cluster: NodeCluster, release: dict[str, Any]) -> None:
    apps = client.AppsV1Api(cluster.api)
    dep = apps.read_namespaced_deployment("leoflow-staging-webhook", NS)
    assert dep.status.ready_replicas == 2
    reg = client.AdmissionregistrationV1Api(cluster.api)
    configs = [c for c in reg.list_mutating_webhook_configuration().items if c.metadata.name.startswith(RELEASE)]
    assert len(configs) == 1
    hook = configs[0].webhooks[0]
    assert hook.client_config.service.namespace == NS and hook.client_config.ca_bundle, "caBundle not wired"
    # The hook Jobs (certificates, migration) ran as pods and cleaned up after themselves.
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(NS).items
    assert [j.metadata.name for j in jobs if not j.metadata.owner_references] == []


def test_the_webhook_pods_run_the_image_make_image_built(cluster: NodeCluster, release: dict[str, Any],
                                                          core: client.CoreV1Api) -> None:
    """What ships is what is tested: the node runs the archive built from the Dockerfile (the session built it
    with hack/build-images.sh, as `make image` does), the running webhook pods' imageID is its digest, and
    `make image` now builds the same image into dist/."""
    product = cluster.images["product"]
    assert product.archive.parent == REPO / "dist", product.archive
    pods = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/component=webhook").items
    running = [p for p in pods if p.status.phase == "Running"]
    statuses = [s for p in running for s in (p.status.container_statuses or [])]
    assert len(statuses) >= 2, [p.metadata.name for p in pods]
    for status in statuses:
        assert status.image == product.ref, status.image
        # containerd names an imported image (no registry, so no repo digest) by its image ID, the digest of
        # its config; a pulled one would be <repository>@<manifest digest>.
        assert status.image_id in (product.id, f"{product.ref.rsplit(':', 1)[0]}@{product.digest}"), (
            status.image_id, product)
    started = min(p.metadata.creation_timestamp.timestamp() for p in running)

    made = subprocess.run(["make", "--no-print-directory", "image"], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=900)
    assert made.returncode == 0, f"make image failed:\n{made.stdout}\n{made.stderr}"
    printed: dict[str, str] = {}
    for line in made.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("image", "archive", "id", "digest"):
            printed[key] = value.strip()
    archive = Path(printed["archive"])
    assert archive.parent == REPO / "dist" and archive.is_file(), printed
    assert archive_digests(archive) == (printed["id"], printed["digest"]), printed
    if printed["id"] != product.id:
        # Only a change of the build's inputs while the session ran explains another image (a shared checkout).
        changed = [str(p.relative_to(REPO)) for p in _image_inputs() if p.stat().st_mtime > started]
        if changed:
            pytest.skip(f"the image's inputs changed while the node ran ({', '.join(changed[:5])}): "
                        "the digests cannot be compared")
    assert (printed["id"], printed["digest"]) == (product.id, product.digest), (
        "`make image` builds another image than the node runs")
    assert printed["image"] == product.ref


def _image_inputs() -> list[Path]:
    """The files the product image is built from (the Dockerfile's context and recipe, the base's recipe)."""
    roots = ["Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "requirements/image.lock",
             "leoflow_staging", "webhook", "gc_job", "shared", "certs", "hack/images/python-base",
             "hack/build-images.sh"]
    files: list[Path] = []
    for root in roots:
        path = REPO / root
        found = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        files += [f for f in found if "__pycache__" not in f.parts and "devenv" not in f.parts]
    return files


def test_an_opted_in_task_pod_runs_with_staging_and_writes_bytes(
        cluster: NodeCluster, core: client.CoreV1Api, release: dict[str, Any], node_db: str) -> None:
    tenant = release["tenant"]
    dag, run = "etl", f"manual__2026-11-28T10:00:00+00:00-{uuid.uuid4().hex[:4]}"
    script = ('test "$LEOFLOW_STAGING_DIR" = /staging && dd if=/dev/urandom of=$LEOFLOW_STAGING_DIR/part.tmp '
              'bs=1M count=4 2>/dev/null && mv $LEOFLOW_STAGING_DIR/part.tmp $LEOFLOW_STAGING_DIR/part && '
              'md5sum $LEOFLOW_STAGING_DIR/part')
    created = core.create_namespaced_pod(tenant, staging_pod(cluster, dag, run, script))
    name = created.metadata.name
    claim = created.metadata.annotations["leoflow.io/staging-pvc"]
    pvc = wait_bound(core, tenant, claim)
    assert pvc.spec.access_modes == ["ReadWriteMany"] and pvc.spec.storage_class_name == STORAGE_CLASS
    wait_phase(core, tenant, name, {"Succeeded"})
    digest = core.read_namespaced_pod_log(name, tenant).split()[0]
    # The bytes are on the node, in the provisioner's folder for this claim.
    folders = [p for p in cluster.data_dir.iterdir() if claim in p.name]
    assert len(folders) == 1 and (folders[0] / "part").stat().st_size == 4 << 20
    import hashlib

    assert hashlib.md5((folders[0] / "part").read_bytes()).hexdigest() == digest
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.url(node_db))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT pvc_name, state, pvc_uid FROM staging_volumes WHERE namespace = :n"),
                            {"n": tenant}).all()
    engine.dispose()
    assert [(r.pvc_name, r.state, r.pvc_uid) for r in rows] == [(claim, "active", pvc.metadata.uid)]


def test_helm_test_passes(cluster: NodeCluster, release: dict[str, Any]) -> None:
    out = cluster.helm("test", RELEASE, "-n", NS, "--logs", timeout=180)
    assert "Phase:          Succeeded" in out.stdout, out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("{") and '"check"' in ln)
    assert json.loads(line)["ok"] is True


def test_gc_job_from_the_cronjob_logs_json_lines(cluster: NodeCluster, release: dict[str, Any]) -> None:
    records = cluster.gc_job(NS, "gc-by-hand")
    assert records[-1]["event"] == "sweep_summary" and records[-1]["failed"] == 0, records


def test_helm_upgrade_with_a_changed_value_rolls_the_webhook(cluster: NodeCluster, release: dict[str, Any]) -> None:
    apps = client.AppsV1Api(cluster.api)
    before = apps.read_namespaced_deployment("leoflow-staging-webhook", NS).metadata.generation
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values", "--set", "config.logLevel=DEBUG",
         "--set", "gc.schedule=* * * * *", "--wait", "--timeout", "5m")
    dep = apps.read_namespaced_deployment("leoflow-staging-webhook", NS)
    assert dep.metadata.generation > before and dep.status.ready_replicas == 2
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env or []}
    config_maps = [e for e in dep.spec.template.spec.containers[0].env_from or []]
    assert env.get("LEOFLOW_STAGING_LOG_LEVEL") == "DEBUG" or config_maps


def test_a_ca_rotation_refuses_no_pod(cluster: NodeCluster, release: dict[str, Any], core: client.CoreV1Api) -> None:
    """`helm upgrade` that forces a new CA while opted-in pods are created without pause: none is refused, and
    the old CA leaves the caBundle only after every replica serves the new CA's certificate (docs/operators.md,
    "A CA rotation refuses no pod"). The pods are never scheduled (a node selector no node has)."""
    tenant = release["tenant"]
    reg = client.AdmissionregistrationV1Api(cluster.api)

    def trusted() -> tuple[bytes, ...]:
        hook = reg.read_mutating_webhook_configuration(RELEASE).webhooks[0]
        return split_pem(base64.b64decode(hook.client_config.ca_bundle))

    before = trusted()
    assert len(before) == 1
    run = f"rotation-{uuid.uuid4().hex[:6]}"
    stop, admitted, refused = threading.Event(), [], []

    def create() -> None:
        while not stop.is_set():
            pod = task_pod("rotation", run, generate_name="rotation-",
                           containers=[{"name": "task", "image": cluster.images["task"].ref,
                                        "imagePullPolicy": "Never", "command": ["true"]}])
            pod["metadata"]["labels"]["leoflow-test/rotation"] = run
            pod["spec"]["nodeSelector"] = {"leoflow-test/no-such-node": "true"}
            try:
                core.create_namespaced_pod(tenant, pod)
                admitted.append(time.monotonic())
            except client.ApiException as exc:
                refused.append(f"{exc.status} {exc.body[:300] if exc.body else exc.reason}")
            time.sleep(0.2)

    creator = threading.Thread(target=create, daemon=True)
    creator.start()
    try:
        time.sleep(3)
        started = time.monotonic()
        cluster.helm("upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values", "--set",
                     "certs.renewBefore=1000000h", "--wait", "--timeout", "6m", timeout=420)
        ended = time.monotonic()
        time.sleep(3)
    finally:
        stop.set()
        creator.join(timeout=30)
        core.delete_collection_namespaced_pod(tenant, label_selector=f"leoflow-test/rotation={run}")
    during = sum(1 for t in admitted if started <= t <= ended)
    print(f"\nFIGURE CA rotation by helm upgrade: {ended - started:.0f}s, {len(admitted)} pods admitted "
          f"({during} during the upgrade), {len(refused)} refused")
    assert refused == [], refused[:5]
    assert during >= 200, (during, len(admitted))
    after = trusted()
    secret = core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NS).data
    ca = base64.b64decode(secret["ca.crt"])
    assert after == split_pem(ca) and after != before  # the old CA dropped once every replica served the new
    assert "next.crt" not in secret and base64.b64decode(secret["trust.crt"]) == ca


def test_the_schedule_runs_the_gc(cluster: NodeCluster, release: dict[str, Any]) -> None:
    batch = client.BatchV1Api(cluster.api)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        scheduled = [j for j in batch.list_namespaced_job(NS).items
                     if any(o.kind == "CronJob" for o in j.metadata.owner_references or [])
                     and (j.status.succeeded or 0) >= 1]
        if scheduled:
            break
        time.sleep(2)
    else:
        raise AssertionError("no schedule-driven GC Job succeeded within 150 s")
    logs = cluster.kubectl("-n", NS, "logs", f"job/{scheduled[0].metadata.name}").stdout
    assert any(line.startswith("{") for line in logs.splitlines()), logs


def test_uninstall_leaves_no_webhook_configuration(cluster: NodeCluster, core: client.CoreV1Api,
                                                   release: dict[str, Any]) -> None:
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait")
    reg = client.AdmissionregistrationV1Api(cluster.api)
    assert [c.metadata.name for c in reg.list_mutating_webhook_configuration().items
            if c.metadata.name.startswith(RELEASE)] == []
    # The cluster does not refuse opted-in pods to a webhook that is gone.
    pod = core.create_namespaced_pod(release["tenant"], staging_pod(cluster, "etl", "after-uninstall", "true"))
    assert "leoflow.io/staging-pvc" not in (pod.metadata.annotations or {})
