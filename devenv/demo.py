"""``make demo``: the whole lifecycle, narrated in plain words.

Where the real node can run (root, containerd), ``demo_node`` plays it with real bytes on /staging.
Otherwise this API-level story plays: it starts (or reuses) the dev control plane and PostgreSQL, runs the real webhook
(`leoflow-staging serve`) and registers it, then plays a DAG run's life: task pods get
/staging, a clear+re-run re-attaches the same PVC, success frees it at once, a failed run
is kept for its TTL, and a pod is refused when no ReadWriteMany class exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kubernetes import client, config

from devenv import __main__ as dev
from devenv import demo_node, orchestrator
from devenv.narrate import DIM, RESET, say, show
from devenv.pods import task_pod
from devenv.webhook import WebhookProcess
from shared import labels
from shared.db.engine import make_engine

NS = "leoflow-demo"
CLASS = "demo-nfs"
DAG = "etl_daily"


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "leoflow-staging")
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, check=check, timeout=120)


def pod(run_id: str, task: str) -> dict[str, Any]:
    return task_pod(DAG, run_id, generate_name=f"{DAG.replace('_', '-')}-{task}-",
                    containers=[{"name": task, "image": "leoflow/task:1"}])


def set_run(engine: sa.Engine, run_id: str, state: str, end: dt.datetime | None = None) -> None:
    orchestrator.set_run(engine, DAG, run_id, state, end)
    print(f"    {DIM}orchestrator: run {run_id} is now {state}{RESET}")


def gc_lines(env: dict[str, str]) -> list[dict[str, Any]]:
    out = cli(env, "gc", check=False)
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    for line in lines:
        if line.get("event") in ("reclaimed", "sweep_summary", "terminating"):
            show(json.dumps({k: v for k, v in line.items() if k not in ("ts", "logger", "level", "msg")}))
    return lines


def main() -> int:
    """The real node with real bytes where it can run here; otherwise (one line why) the API-level story."""
    why_not = demo_node.node_possible()
    if why_not is None:
        try:
            return demo_node.main()
        except Exception as exc:  # the node could not start or the story broke: say so, then play the API demo
            why_not = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    say(f"The real node cannot run here ({why_not}): playing the story at the API level instead")
    return api_demo()


def api_demo() -> int:
    started = time.monotonic()
    state = dev.STATE
    we_started = not (state.exists() and dev.status() == 0)
    if we_started:
        say("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager) and PostgreSQL")
        dev.up()
    envfile = dict(line.removeprefix("export ").split("=", 1) for line in (dev.DEV / "env").read_text().splitlines())
    kubeconfig, db_url = envfile["KUBECONFIG"], envfile["LEOFLOW_STAGING_DATABASE_URL"]
    api = config.new_client_from_config(config_file=kubeconfig)
    core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    engine = make_engine(db_url, timeout=10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env.update({"LEOFLOW_STAGING_DATABASE_URL": db_url, "LEOFLOW_STAGING_KUBECONFIG": kubeconfig,
                "LEOFLOW_STAGING_ADOPT_MIN_AGE": "0s", "LEOFLOW_STAGING_GC_SETTLE_SECONDS": "5"})
    workdir = Path(tempfile.mkdtemp(prefix="leoflow-demo-"))
    webhook: WebhookProcess | None = None
    try:
        say("The orchestrator's metadatabase: staging_volumes (our migration) and its dag_run table")
        show(cli(env, "migrate").stdout)
        orchestrator.create_runs_table(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM dag_run WHERE dag_id = :d"), {"d": DAG})

        say("Starting the webhook (`leoflow-staging serve`, gunicorn, TLS) and registering it")
        webhook = WebhookProcess(workdir=workdir, env={**env, "LEOFLOW_STAGING_WORKERS": "1"})
        webhook.start()
        webhook.register(api, "leoflow-staging-demo")
        port = webhook.port
        try:
            core.delete_namespace(NS)
            while any(n.metadata.name == NS for n in core.list_namespace().items):
                time.sleep(0.5)
        except client.ApiException:
            pass
        core.create_namespace({"metadata": {"name": NS, "labels": {labels.INSTANCE: labels.DEFAULT_INSTANCE}}})
        with contextlib.suppress(client.ApiException):
            storage.create_storage_class({"metadata": {"name": CLASS}, "provisioner": "nfs.csi.k8s.io"})
        show(f"webhook at https://127.0.0.1:{port}/mutate; StorageClass {CLASS} (nfs.csi.k8s.io: known RWX)")

        run1 = f"manual__{dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()}"
        say(f"DAG run {DAG} / {run1} starts: the dispatcher creates two task pods")
        set_run(engine, run1, "running")
        created = [core.create_namespaced_pod(NS, pod(run1, task)) for task in ("extract", "transform")]
        for p in created:
            c = p.spec.containers[0]
            mounts = [f"{m.name}->{m.mount_path}" for m in c.volume_mounts or []]
            envs = [f"{e.name}={e.value}" for e in c.env or []]
            show(f"pod {p.metadata.name}: mounts {mounts}, env {envs}, "
                 f"pvc {p.metadata.annotations['leoflow.io/staging-pvc']}")
        pvc_name = created[0].metadata.annotations["leoflow.io/staging-pvc"]
        pvc = core.read_namespaced_persistent_volume_claim(pvc_name, NS)
        show(f"PVC {pvc_name}: {pvc.spec.access_modes} {pvc.spec.resources.requests['storage']} "
             f"class {pvc.spec.storage_class_name} uid {pvc.metadata.uid}")
        show(cli(env, "volumes", "--dag", DAG).stdout)

        say("The run fails. The GC keeps a failed run's volume for 24 h after the run ended")
        set_run(engine, run1, "failed", dt.datetime.now(dt.UTC))
        gc_lines(env)
        say("A person clears the failed task: the re-run's pod re-attaches the SAME volume (upstream output survives)")
        set_run(engine, run1, "running")
        again = core.create_namespaced_pod(NS, pod(run1, "transform-retry"))
        same = core.read_namespaced_persistent_volume_claim(pvc_name, NS).metadata.uid == pvc.metadata.uid
        show(f"pod {again.metadata.name} -> {again.metadata.annotations['leoflow.io/staging-pvc']} (same uid: {same})")

        say("The run succeeds: the GC reclaims its volume at once")
        set_run(engine, run1, "success", dt.datetime.now(dt.UTC))
        gc_lines(env)
        show(cli(env, "volumes", "--dag", DAG).stdout)

        run2 = "scheduled__2026-11-28T00:00:00+00:00"
        say(f"Run {run2} fails; with a demo TTL of 5 s its volume is kept, then reclaimed")
        set_run(engine, run2, "running")
        core.create_namespaced_pod(NS, pod(run2, "extract"))
        set_run(engine, run2, "failed", dt.datetime.now(dt.UTC))
        env["LEOFLOW_STAGING_FAILED_TTL"] = "5s"
        gc_lines(env)
        show("(kept: the run ended less than 5 s ago) ... waiting 6 s")
        time.sleep(6)
        gc_lines(env)

        say("No ReadWriteMany StorageClass: the pod is refused at once, with the reason")
        storage.patch_storage_class(CLASS, {"metadata": {"annotations": {"leoflow.io/rwx": "false"}}})
        try:
            core.create_namespaced_pod(NS, pod("manual__no-rwx", "extract"))
            show("unexpected: the pod was admitted")
        except client.ApiException as exc:
            show(json.loads(exc.body)["message"])
        show(cli(env, "volumes", "--dag", DAG).stdout)
        say(f"Done in {time.monotonic() - started:.0f} s. Cleaning up.")
        return 0
    finally:
        for cleanup in (lambda: admission.delete_mutating_webhook_configuration("leoflow-staging-demo"),
                        lambda: storage.delete_storage_class(CLASS), lambda: core.delete_namespace(NS)):
            with contextlib.suppress(client.ApiException):
                cleanup()
        if webhook is not None:
            webhook.stop()
        engine.dispose()
        if we_started:
            dev.down(quiet=True)


if __name__ == "__main__":
    sys.exit(main())
