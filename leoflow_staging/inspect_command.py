"""``leoflow-staging inspect DAG_ID RUN_ID``: look at a run's files through a read-only pod, or say when and why
its volume was reclaimed (docs/operators.md, "A run failed: what now")."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from leoflow_staging.inspection import LISTING_SCRIPT, inspect_pod, parse_listing, pod_name, render_listing
from shared.db import volumes_repo
from shared.db.engine import make_engine, translate_errors
from shared.naming import id_problem, pvc_name
from shared.settings import Settings, parse_duration
from shared.volumes import VolumeRecord, VolumeState

NOT_FOUND = 1  # exit code: nothing to inspect (never recorded, reclaimed, or being reclaimed)


def _say(message: str) -> int:
    print(f"leoflow-staging inspect: {message}", file=sys.stderr)
    return NOT_FOUND


def _audit(rows: list[VolumeRecord], namespace: str) -> str | None:
    gone = [r for r in rows if r.namespace == namespace and r.state is VolumeState.DELETED]
    if not gone:
        return None
    r = gone[0]  # newest first
    when = r.deleted_at.strftime("%Y-%m-%d %H:%M:%S UTC") if r.deleted_at else "?"
    reason = r.delete_reason.value if r.delete_reason else "?"
    return (f"the volume {namespace}/{r.pvc_name} of this run was reclaimed at {when} ({reason}); its files are "
            f"gone. `leoflow-staging volumes --dag ... --run ...` shows the whole history")


def inspect(settings: Settings, args: argparse.Namespace) -> int:
    from shared.kube import make_api_client  # noqa: PLC0415
    from shared.kube.inspect_api import InspectKubeApi  # noqa: PLC0415

    for what, value in (("DAG_ID", args.dag_id), ("RUN_ID", args.run_id)):
        if problem := id_problem(value):
            print(f"leoflow-staging inspect: {what} {value!r}: {problem}", file=sys.stderr)
            return 2
    ttl = parse_duration(args.ttl)
    if args.uid <= 0:
        print("leoflow-staging inspect: --uid must be a non-root uid (> 0)", file=sys.stderr)
        return 2
    claim = pvc_name(args.dag_id, args.run_id)
    engine = make_engine(settings.database_url, timeout=settings.db_timeout)
    with translate_errors("reading staging_volumes"), engine.connect() as conn:
        rows = volumes_repo.list_volumes(conn, dag_id=args.dag_id, run_id=args.run_id)
    engine.dispose()
    namespace = args.namespace
    if namespace is None:
        spaces = sorted({r.namespace for r in rows if r.state is not VolumeState.DELETED}) or sorted(
            {r.namespace for r in rows})
        if not spaces:
            return _say(f"no staging volume was ever recorded for dag {args.dag_id!r}, run {args.run_id!r} (give "
                        "-n NAMESPACE to look in the cluster anyway)")
        if len(spaces) > 1:
            return _say(f"this run has volumes in several namespaces ({', '.join(spaces)}): give -n NAMESPACE")
        namespace = spaces[0]
    live = next((r for r in rows if r.namespace == namespace and r.state is not VolumeState.DELETED), None)
    directory = None
    if live is not None and live.shared_claim is not None:  # the run's directory on the namespace's shared claim
        if live.state is VolumeState.RECLAIMING:
            return _say(f"the directory {live.pvc_name} on {namespace}/{live.shared_claim} is being removed; its "
                        "files are going")
        directory, claim = live.pvc_name, live.shared_claim
    kube = InspectKubeApi(make_api_client(settings.kubeconfig), timeout=max(settings.kube_timeout, 10.0))
    found = kube.claim(namespace, claim)
    if found is None or found["deleting"] or (live is not None and directory is not None
                                              and found["uid"] != live.pvc_uid):
        audit = _audit(rows, namespace)
        if found is not None and found["deleting"]:
            return _say(f"the volume {namespace}/{claim} is being reclaimed; its files are going")
        return _say(audit or f"no claim {namespace}/{claim}: this run has no staging volume there")

    name = pod_name(directory or claim)
    pod = kube.pod(namespace, name)
    if pod is not None and (pod["deleting"] or pod["phase"] in ("Succeeded", "Failed")):
        kube.delete_pod(namespace, name, uid=pod["uid"])  # its TTL ended: start a new one
        pod = None
    if pod is None:
        kube.create_pod(namespace, inspect_pod(namespace, claim, image=args.image, uid=args.uid, ttl=ttl,
                                               instance=settings.instance, directory=directory))
        print(f"started pod {namespace}/{name} (read-only, uid {args.uid}, ends by itself in {args.ttl})")
    else:
        print(f"reusing pod {namespace}/{name}")
    deadline = time.monotonic() + args.timeout
    while (pod := kube.pod(namespace, name)) is None or pod["phase"] != "Running":
        if pod is not None and pod["phase"] in ("Succeeded", "Failed"):
            return _say(f"pod {namespace}/{name} ended ({pod['phase']}: {pod['message'] or 'no message'})")
        if time.monotonic() >= deadline:
            why = ", ".join(pod["waiting"]) if pod and pod["waiting"] else (pod or {}).get("phase", "absent")
            return _say(f"pod {namespace}/{name} not running after {args.timeout:.0f}s ({why}); see `kubectl -n "
                        f"{namespace} describe pod {name}`")
        time.sleep(0.5)
    listing = parse_listing(kube.exec(namespace, name, ["python3", "-c", LISTING_SCRIPT, str(args.limit)],
                                      timeout=120))
    for line in render_listing(listing, top=args.top):
        print(line)
    until = (dt.datetime.now(dt.UTC) + ttl).strftime("%H:%M UTC")
    print(f"a shell on the files (read-only, until about {until}): kubectl -n {namespace} exec -it {name} -- sh")
    return 0
