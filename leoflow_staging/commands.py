"""The subcommands other than ``serve``: each reads nothing but its settings and arguments."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys

from shared.db import migrate as migrations
from shared.db import volumes_repo
from shared.db.engine import describe, make_engine, translate_errors
from shared.logs import configure_logging
from shared.settings import Settings, parse_duration
from shared.volumes import VolumeRecord, VolumeState


def migrate(settings: Settings) -> int:
    engine = make_engine(settings.database_url, timeout=max(settings.db_timeout, 30.0))
    with translate_errors(f"migrating {describe(settings.database_url)}"):
        before = migrations.current(engine)
        reached = migrations.upgrade(engine)
    print(f"schema at revision {reached} (was {before or 'empty'}) in {describe(settings.database_url)}")
    return 0


def gc(settings: Settings, *, dry_run: bool) -> int:
    from gc_job import directory_reclaim  # noqa: PLC0415
    from gc_job.plan import GcPolicy  # noqa: PLC0415
    from gc_job.sweep import SweepConfig, Sweeper  # noqa: PLC0415
    from shared.claim_events import gc_events  # noqa: PLC0415
    from shared.kube import KubeApi, make_api_client  # noqa: PLC0415
    from shared.kube.events import EventRecorder  # noqa: PLC0415

    configure_logging(settings.log_level)
    engine = make_engine(settings.database_url, timeout=settings.gc_db_timeout, pool_size=settings.gc_parallelism + 2)
    kube = KubeApi(make_api_client(settings.kubeconfig, pool_size=settings.gc_parallelism * 2),
                   timeout=max(settings.kube_timeout, 5.0), instance=settings.instance,
                   namespaces=settings.namespaces)
    policy = GcPolicy(failed_ttl=settings.failed_ttl, success_states=settings.runs.success_states,
                      failed_states=settings.runs.failed_states, adopt_min_age=settings.adopt_min_age)
    config = SweepConfig(runs=settings.runs, policy=policy, batch_size=settings.gc_batch_size,
                         settle_seconds=settings.gc_settle_seconds, parallelism=settings.gc_parallelism,
                         delete_finished_pods=settings.gc_delete_finished_pods,
                         # longer than any one step between two touches of the lock (a DB wait, a settle)
                         lock_idle_seconds=max(10 * settings.gc_db_timeout, 3 * settings.gc_settle_seconds),
                         audit_retention=settings.audit_retention)
    recorder = None if dry_run or not settings.events else EventRecorder(
        make_api_client(settings.kubeconfig, pool_size=1), instance=settings.pod_name or socket.gethostname(),
        timeout=min(settings.kube_timeout, 2.0))
    directories = directory_reclaim.from_settings(settings, engine=engine, kube=kube, policy=policy,
                                                  clock=lambda: dt.datetime.now(dt.UTC),
                                                  pool_size=settings.gc_parallelism)
    try:
        return Sweeper(engine=engine, kube=kube, config=config, directories=directories,
                       on_event=gc_events(recorder.emit) if recorder else None).run(dry_run=dry_run)
    finally:
        if recorder is not None:
            # Best effort: a slow apiserver delays the exit by at most this, plus one post in flight. The
            # thread is ended, not left running: a daemon thread posting during the interpreter's exit can
            # abort it (measured: exit -6 after a sweep of 10k reclaims, the queue still full).
            recorder.close(timeout=5.0)


def _row(v: VolumeRecord) -> dict[str, object]:
    return {
        "id": v.id, "namespace": v.namespace, "pvc": v.pvc_name, "pvc_uid": v.pvc_uid, "dag_id": v.dag_id,
        "run_id": v.run_id, "storage_class": v.storage_class, "size": v.size, "state": v.state.value,
        "created_at": v.created_at.isoformat(), "deleted_at": v.deleted_at.isoformat() if v.deleted_at else None,
        "delete_reason": v.delete_reason.value if v.delete_reason else None, "detail": v.detail,
        "held_until": v.held_until.isoformat() if v.held_until else None, "hold_reason": v.hold_reason,
        "held_by": v.held_by, "held_at": v.held_at.isoformat() if v.held_at else None,
        "mode": v.mode, "shared_claim": v.shared_claim, "bytes_freed": v.bytes_freed,
    }


def _held(v: VolumeRecord, now: dt.datetime) -> str:
    """The HELD column: until when a hold in force keeps the volume."""
    if v.held_until is None or not v.held(now) or v.state is VolumeState.DELETED:
        return "-"
    return "until " + v.held_until.strftime("%Y-%m-%d %H:%M:%S")


def volumes(settings: Settings, *, state: str | None, dag: str | None, run: str | None, as_json: bool,
            limit: int | None, now: dt.datetime | None = None) -> int:
    now = now or dt.datetime.now(dt.UTC)
    engine = make_engine(settings.database_url, timeout=settings.db_timeout)
    with translate_errors("reading staging_volumes"), engine.connect() as conn:
        rows = volumes_repo.list_volumes(conn, state=state, dag_id=dag, run_id=run, limit=limit)
    if as_json:
        for v in rows:
            print(json.dumps(_row(v)))
        return 0
    header = ("NAMESPACE", "PVC", "DAG", "RUN", "STATE", "CREATED", "DELETED", "REASON", "HELD")
    table = [header] + [
        (v.namespace, v.pvc_name, v.dag_id, v.run_id, v.state.value,
         v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
         v.deleted_at.strftime("%Y-%m-%d %H:%M:%S") if v.deleted_at else "-",
         v.delete_reason.value if v.delete_reason else "-", _held(v, now))
        for v in rows
    ]
    safe = [[json.dumps(c)[1:-1] for c in r] for r in table]  # ids may hold control characters
    widths = [max(len(r[i]) for r in safe) for i in range(len(header))]
    for r in safe:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def certs(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from certs.bundle import CertPolicy, service_hosts  # noqa: PLC0415
    from certs.wiring import SecretRef, ensure_secret, patch_webhook, write_files  # noqa: PLC0415
    from shared.kube import make_api_client  # noqa: PLC0415
    from shared.kube.certs_api import CertsKubeApi  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    if args.certs_command == "files":
        policy = CertPolicy(hosts=tuple(args.host), validity=parse_duration(args.validity),
                            ca_validity=parse_duration(args.ca_validity),
                            renew_before=parse_duration(args.renew_before))
        for path in write_files(Path(args.out_dir), policy, now=now):
            print(f"wrote {path}")
        return 0
    api = CertsKubeApi(make_api_client(settings.kubeconfig), timeout=max(settings.kube_timeout, 10.0))
    ref = SecretRef(namespace=args.namespace, name=args.secret)
    if args.certs_command == "ensure-secret":
        policy = CertPolicy(hosts=service_hosts(args.service, args.namespace),
                            validity=parse_duration(args.validity), ca_validity=parse_duration(args.ca_validity),
                            renew_before=parse_duration(args.renew_before))
        why = ensure_secret(api, ref, policy, now=now,
                            labels={"app.kubernetes.io/managed-by": "leoflow-staging"})
        print(f"Secret {ref.namespace}/{ref.name}: {why}")
        return 0
    from certs.probe import served_certificates  # noqa: PLC0415

    served = None
    if args.service:
        service = args.service
        served = served_certificates(lambda: api.live_endpoints(ref.namespace, service))
    try:
        result = patch_webhook(api, ref, args.webhook_config,
                               labels={"app.kubernetes.io/managed-by": "leoflow-staging"}, served=served,
                               wait_seconds=parse_duration(args.wait).total_seconds())
    except FileNotFoundError as exc:
        print(f"leoflow-staging certs patch-webhook: {exc}", file=sys.stderr)
        return 1
    print(f"MutatingWebhookConfiguration {args.webhook_config}: caBundle set on {result.webhooks} webhook(s), "
          f"{result.trusted} CA(s) trusted")
    return 0


def check_admission(settings: Settings, *, namespace: str) -> int:
    """Dry-run an opted-in pod through the API and check the webhook patched it."""
    from shared import labels  # noqa: PLC0415
    from shared.kube import KubeApi, make_api_client  # noqa: PLC0415

    kube = KubeApi(make_api_client(settings.kubeconfig), timeout=max(settings.kube_timeout, 10.0))
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "leoflow-staging-check-", "labels": {
            labels.OPT_IN: labels.OPT_IN_VALUE, labels.DAG_ID: "leoflow-staging-check", labels.RUN_ID: "helm-test"},
            # the raw ids where either identity mode reads them (contracts 1; Airflow's annotations)
            "annotations": {labels.DAG_ID: "leoflow-staging-check", labels.RUN_ID: "helm-test",
                            "dag_id": "leoflow-staging-check", "run_id": "helm-test"}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "containers": [{"name": "check", "image": "busybox"}]},
    }
    result = kube.dry_run_pod(namespace, pod)
    annotations = (result.get("metadata") or {}).get("annotations") or {}
    volumes = [v.get("name") for v in (result.get("spec") or {}).get("volumes") or []]
    env = [e.get("name") for e in ((result.get("spec") or {}).get("containers") or [{}])[0].get("env") or []]
    ok = labels.PVC in annotations and labels.VOLUME_NAME in volumes and labels.ENV_NAME in env
    print(json.dumps({"check": "admission", "ok": ok, "pvc": annotations.get(labels.PVC), "volumes": volumes}))
    return 0 if ok else 1
