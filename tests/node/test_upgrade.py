"""`helm upgrade` from the previous release to this checkout with runs in flight, as docs/operators.md "Upgrades
and schema migrations" says: the previous release's chart and image (built from its commit with its own
recipe, cached), a running run and a failed run within its TTL with bytes on their volumes, opted-in pods
created without pause while old and new webhook replicas serve side by side; then every row, claim and byte is
still there, the schema is at this checkout's head, the new GC keeps both runs and a hold works."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.assets import REPO
from devenv.cluster import CHART, NodeCluster
from devenv.images import Image
from devenv.orchestrator import create_runs_table, set_run
from devenv.pods import task_pod
from devenv.webhook import console_script
from shared import labels
from shared.db.migrate import current, head
from tests.node.test_node import wait_phase

# The last release: the main branch before this round's changes.
PREVIOUS = "0ca052911dc3dd2982d2030d87e116b78c96b7df"
RELEASE, NS, TENANT, DB = "leoflow-staging-up", "leoflow-up", "team-up", "node_upgrade"
WRITE = "echo {word} > $LEOFLOW_STAGING_DIR/{word}.txt"
READ = "cat $LEOFLOW_STAGING_DIR/{word}.txt"


@pytest.fixture(scope="module")
def previous(cluster: NodeCluster) -> tuple[Path, Image]:
    """The previous release's chart and product image (its Dockerfile, built by its own hack/build-images.sh into
    the shared build cache; the archive and chart are kept under the cache, keyed by the commit)."""
    cache = Path(os.environ.get("LEOFLOW_DEV_CACHE", Path.home() / ".cache" / "leoflow-staging"))
    folder = cache / "previous-release" / PREVIOUS[:12]
    src, stamp = folder / "src", folder / "image.json"
    if not stamp.exists():
        tree = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS], capture_output=True,
                              check=False)
        assert tree.returncode == 0, f"the previous release {PREVIOUS} is not in this clone's history: " \
                                     f"{tree.stderr.decode()[-300:]}"
        src.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tree.stdout)) as tar:
            tar.extractall(src, filter="data")
        built = subprocess.run(["bash", "hack/build-images.sh", "product"], cwd=src, stdout=subprocess.PIPE,
                               text=True, check=False, timeout=1200)
        assert built.returncode == 0, "building the previous release's image failed (its messages are above)"
        stamp.write_text(built.stdout)
    item = json.loads(stamp.read_text())["product"]
    image = Image(name="product", archive=Path(item["archive"]), ref=item["ref"], id=item["id"],
                  digest=item["digest"])
    assert cluster.node is not None
    cluster.node.import_image(image.archive, image.ref)
    return src / "charts" / "leoflow-staging", image


@pytest.fixture(scope="module")
def engine(cluster: NodeCluster) -> Iterator[sa.Engine]:
    assert cluster.postgres is not None
    eng = sa.create_engine(cluster.postgres.create_database(DB))
    create_runs_table(eng)
    yield eng
    eng.dispose()


def _pod(cluster: NodeCluster, dag: str, run: str, script: str, *, schedule: bool = True) -> dict[str, Any]:
    pod = task_pod(dag, run, generate_name="up-", containers=[{
        "name": "task", "image": cluster.images["task"].ref, "imagePullPolicy": "Never",
        "command": ["sh", "-c", script]}])
    pod["spec"]["enableServiceLinks"] = False
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    if not schedule:  # admitted, never run (one node takes 110 pods)
        pod["spec"]["nodeSelector"] = {"leoflow-test/no-such-node": "true"}
        pod["metadata"]["labels"]["leoflow-test/upgrade"] = "flood"
    return pod


def _run(cluster: NodeCluster, core: client.CoreV1Api, dag: str, run: str, script: str) -> tuple[str, str]:
    created = core.create_namespaced_pod(TENANT, _pod(cluster, dag, run, script))
    done = wait_phase(core, TENANT, created.metadata.name, {"Succeeded", "Failed"}, timeout=180)
    logs = core.read_namespaced_pod_log(created.metadata.name, TENANT)
    assert done.status.phase == "Succeeded", logs
    return created.metadata.annotations[labels.PVC], logs


def _rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT id, namespace, pvc_name, pvc_uid, dag_id, run_id, state, delete_reason FROM staging_volumes "
            "ORDER BY id")).all()]


def test_helm_upgrade_from_the_previous_release_with_runs_in_flight(
        cluster: NodeCluster, core: client.CoreV1Api, previous: tuple[Path, Image], engine: sa.Engine) -> None:
    old_chart, old_image = previous
    repo, tag = old_image.ref.rsplit(":", 1)
    core.create_namespace({"metadata": {"name": TENANT}})
    cluster.install_chart(release=RELEASE, namespace=NS, database=DB, chart=old_chart, values=(
        "--set", f"image.repository={repo}", "--set", f"image.tag={tag}", "--set", "gc.suspend=true",
        "--set", "config.defaultSize=1Gi", "--set", f"test.namespace={TENANT}"))
    try:
        running, failed = f"running-{uuid.uuid4().hex[:4]}", f"failed-{uuid.uuid4().hex[:4]}"
        set_run(engine, "etl", running, "running")
        set_run(engine, "etl", failed, "running")
        claims = {running: _run(cluster, core, "etl", running, WRITE.format(word="alpha"))[0],
                  failed: _run(cluster, core, "etl", failed, WRITE.format(word="beta"))[0]}
        set_run(engine, "etl", failed, "failed", dt.datetime.now(dt.UTC))
        before = _rows(engine)
        uids = {run: core.read_namespaced_persistent_volume_claim(c, TENANT).metadata.uid
                for run, c in claims.items()}

        stop, admitted, refused = threading.Event(), [], []

        def flood() -> None:  # the running run's warm path, and a new run every 20 pods (the cold path)
            i = 0
            while not stop.is_set():
                run = running if i % 20 else f"new-{i}"
                try:
                    pod = core.create_namespaced_pod(TENANT, _pod(cluster, "etl", run, "true", schedule=False))
                    assert pod.metadata.annotations[labels.PVC]
                    admitted.append(time.monotonic())
                except client.ApiException as exc:
                    refused.append(f"{exc.status} {exc.body[:300] if exc.body else exc.reason}")
                i += 1
                time.sleep(0.1)

        creator = threading.Thread(target=flood, daemon=True)
        creator.start()
        try:
            time.sleep(3)
            # docs/operators.md: label the namespaces first, then upgrade with the list.
            cluster.kubectl("label", "namespace", TENANT, f"{labels.INSTANCE}={RELEASE}")
            started = time.monotonic()
            cluster.helm("upgrade", RELEASE, str(CHART), "-n", NS, "--set", "database.existingSecret=leoflow-db",
                         *cluster.image_values(), "--set", "gc.suspend=true", "--set", "config.defaultSize=1Gi",
                         "--set", f"namespaces={{{TENANT}}}", "--wait", "--timeout", "6m", timeout=420)
            ended = time.monotonic()
            time.sleep(5)
        finally:
            stop.set()
            creator.join(timeout=30)
            core.delete_collection_namespaced_pod(TENANT, label_selector="leoflow-test/upgrade=flood")
        during = sum(1 for t in admitted if started <= t <= ended)
        print(f"\nFIGURE helm upgrade from {PREVIOUS[:12]}: {ended - started:.0f}s, {len(admitted)} pods admitted "
              f"({during} during the upgrade), {len(refused)} refused")
        assert refused == [], refused[:5]
        assert during > 0

        after = {r[0]: r for r in _rows(engine)}
        assert all(after[r[0]] == r for r in before), (before, after)  # every earlier row exactly as it was
        for run, claim in claims.items():
            assert core.read_namespaced_persistent_volume_claim(claim, TENANT).metadata.uid == uids[run]
        assert current(engine) == head()
        # The bytes are still there, through the new webhook onto the same claims.
        assert _run(cluster, core, "etl", running, READ.format(word="alpha")) == (claims[running], "alpha\n")
        assert _run(cluster, core, "etl", failed, READ.format(word="beta"))[1] == "beta\n"
        # The new GC keeps both (one running, one failed within its TTL) and reclaims nothing of them.
        records = cluster.gc_job(NS, "gc-after-upgrade", cronjob=f"{RELEASE}-gc")
        assert records[-1]["event"] == "sweep_summary" and records[-1]["failed"] == 0, records
        assert not [r for r in records if r.get("event") == "reclaimed" and r.get("pvc") in claims.values()]
        assert [r["run_id"] for r in records if r.get("event") == "kept_failed_run"] == [failed], records
        # A hold, a feature of the new release, on the failed run's volume.
        assert cluster.postgres is not None and cluster.plane is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")} | {
            "LEOFLOW_STAGING_DATABASE_URL": cluster.postgres.url(DB),
            "LEOFLOW_STAGING_KUBECONFIG": str(cluster.plane.kubeconfig_path)}
        hold = subprocess.run([console_script(), "hold", "etl", failed, "--for", "72h", "--reason", "upgrade test"],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert hold.returncode == 0, hold.stdout + hold.stderr
    finally:
        cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
        core.delete_namespace(NS)
        core.delete_namespace(TENANT)
