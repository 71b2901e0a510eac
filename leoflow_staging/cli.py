"""The ``leoflow-staging`` console script: one entry point, one subcommand per program.

Settings are read once here (environment, then flags); errors become exit codes here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from leoflow_staging import __version__
from leoflow_staging.inspection import DEFAULT_UID
from leoflow_staging.run_problem import RunProblem
from shared.errors import SettingsError, StagingError
from shared.holds import HoldError
from shared.settings import Settings, from_env, unknown_settings

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REFUSED = 4  # `directory`: the run's directory was not prepared or removed (the JSON line says why)
EXIT_FAILED = 5  # `directory`: the file system failed a step; a retry goes on (the JSON line says why)
RESULT_MAX = 4000  # bytes of the --result-file message (a Kubernetes termination message is cut at 4096)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from webhook.serving import serve  # noqa: PLC0415 - keep `--help` and other commands light

    serve(settings.with_overrides(host=args.host, port=args.port, cert_file=args.cert_file,
                                  key_file=args.key_file, workers=args.workers, threads=args.threads))
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.commands import migrate  # noqa: PLC0415

    return migrate(settings)


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.commands import gc  # noqa: PLC0415

    return gc(settings, dry_run=args.dry_run)


def _volumes(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.commands import volumes  # noqa: PLC0415

    if args.summary:
        from leoflow_staging.summary import summary  # noqa: PLC0415

        return summary(settings, as_json=args.json)
    return volumes(settings, state=args.state, dag=args.dag, run=args.run, as_json=args.json,
                   limit=args.limit)


def _hold(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.run_commands import hold  # noqa: PLC0415

    return hold(settings, dag_id=args.dag_id, run_id=args.run_id, duration=args.duration, reason=args.reason,
                namespace=args.namespace)


def _release(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.run_commands import release  # noqa: PLC0415

    return release(settings, dag_id=args.dag_id, run_id=args.run_id, namespace=args.namespace)


def _reclaim(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.run_commands import ask, reclaim  # noqa: PLC0415

    return reclaim(settings, dag_id=args.dag_id, run_id=args.run_id, namespace=args.namespace, yes=args.yes,
                   confirm=ask)


def _certs(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.commands import certs  # noqa: PLC0415

    return certs(settings, args)


def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.inspect_command import inspect  # noqa: PLC0415

    return inspect(settings, args)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from leoflow_staging.commands import check_admission  # noqa: PLC0415

    return check_admission(settings, namespace=args.namespace)


def _directory(args: argparse.Namespace) -> int:
    """Runs in a task pod's init container or a GC cleanup pod: reads no settings, needs no database or API."""
    from dataclasses import asdict  # noqa: PLC0415

    from shared.run_directory import DirectoryError, DirectoryFailed, cleanup, prepare  # noqa: PLC0415

    result: dict[str, object]
    try:
        if args.directory_command == "prepare":
            detail = prepare(Path(args.path), dag_id=args.dag_id, run_id=args.run_id, directory=args.directory)
            result = {"status": "prepared", "detail": detail}
        else:
            result = asdict(cleanup(Path(args.root), dag_id=args.dag_id, run_id=args.run_id,
                                    directory=args.directory))
    except DirectoryError as exc:  # not the run's, not a run directory: nothing removed, a person looks
        result = {"status": "refused", "error": str(exc)}
    except DirectoryFailed as exc:  # the file system failed a step: the next attempt goes on
        result = {"status": "failed", "error": str(exc)}
    line = _one_line(result)
    print(line, flush=True)
    if getattr(args, "result_file", None):
        try:
            Path(args.result_file).write_text(line, encoding="utf-8")
        except OSError as exc:
            print(f"leoflow-staging directory: cannot write {args.result_file}: {exc.strerror}", file=sys.stderr)
    return {"refused": EXIT_REFUSED, "failed": EXIT_FAILED}.get(str(result["status"]), 0)


def _one_line(result: dict[str, object]) -> str:
    """``result`` as JSON of at most RESULT_MAX bytes (a long error is shortened)."""
    line = json.dumps(result, ensure_ascii=False)
    while len(line.encode("utf-8")) > RESULT_MAX and isinstance(result.get("error"), str):
        error = str(result["error"])
        keep = max(0, len(error) - (len(line.encode("utf-8")) - RESULT_MAX) - 1)
        result = {**result, "error": error[:keep] + "…"}
        line = json.dumps(result, ensure_ascii=False)
    return line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leoflow-staging",
        description="Per-DAG-run ReadWriteMany staging volumes for Leoflow. Configuration comes from "
                    "LEOFLOW_STAGING_* environment variables (see the README); flags override them.",
    )
    parser.add_argument("--version", action="version", version=f"leoflow-staging {__version__}")
    parser.add_argument("--database-url", help="override LEOFLOW_STAGING_DATABASE_URL")
    parser.add_argument("--kubeconfig", help="override LEOFLOW_STAGING_KUBECONFIG (default: in-cluster)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTPS mutating admission webhook (gunicorn)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--cert-file")
    serve.add_argument("--key-file")
    serve.add_argument("--workers", type=int)
    serve.add_argument("--threads", type=int)
    serve.set_defaults(func=_serve)

    gc = sub.add_parser("gc", help="run one GC sweep (what the CronJob runs)")
    gc.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    gc.set_defaults(func=_gc)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(func=_migrate)

    volumes = sub.add_parser("volumes", help="show the staging_volumes audit table")
    volumes.add_argument("--state", choices=["active", "reclaiming", "deleted"])
    volumes.add_argument("--dag", help="only this DAG id")
    volumes.add_argument("--run", help="only this run id")
    volumes.add_argument("--limit", type=int, default=None, help="at most this many rows (newest first)")
    volumes.add_argument("--json", action="store_true", help="one JSON object per line")
    volumes.add_argument("--summary", action="store_true",
                         help="counts, requested storage, kept failed runs and the GC's health (what /metrics exports)")
    volumes.set_defaults(func=_volumes)

    hold = sub.add_parser("hold", help="keep a run's volume past its normal reclaim for a while (also a succeeded "
                                       "or still running run's)")
    release = sub.add_parser("release", help="end a run's hold now")
    reclaim = sub.add_parser("reclaim", help="free a run's volume now (only once the run has ended or is gone)")
    for p in (hold, release, reclaim):
        p.add_argument("dag_id", metavar="DAG_ID")
        p.add_argument("run_id", metavar="RUN_ID")
        p.add_argument("-n", "--namespace", help="the volume's namespace (needed when the run has several)")
    hold.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                      help="how long to keep it, e.g. 90m, 72h, 7d (at most 365d)")
    hold.add_argument("--reason", help="why, for the audit and the GC's log")
    reclaim.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    hold.set_defaults(func=_hold)
    release.set_defaults(func=_release)
    reclaim.set_defaults(func=_reclaim)

    certs = sub.add_parser("certs", help="CA and serving certificate generation, Secret and caBundle wiring")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    files = certs_sub.add_parser("files", help="write ca.crt, tls.crt, tls.key to a folder (local serving)")
    files.add_argument("--out-dir", required=True)
    files.add_argument("--host", action="append", required=True, help="DNS name or IP for the SANs (repeat)")
    secret = certs_sub.add_parser("ensure-secret", help="create, reuse or renew the TLS Secret")
    patch = certs_sub.add_parser("patch-webhook", help="copy the Secret's CAs into the webhook configuration and "
                                                       "complete a CA rotation (docs/operators.md, Certificates)")
    for p in (secret, patch):
        p.add_argument("--namespace", required=True)
        p.add_argument("--secret", required=True)
    secret.add_argument("--service", required=True, help="the webhook Service (names the SANs)")
    patch.add_argument("--webhook-config", required=True, help="the MutatingWebhookConfiguration's name")
    patch.add_argument("--service", help="the webhook Service: during a CA rotation, drop the old CA once each of "
                                         "its ready endpoints serves the new CA's certificate")
    patch.add_argument("--wait", default="240s", help="how long to wait for that (default 240s; then both CAs "
                                                      "stay trusted until the next run)")
    for p in (files, secret):
        p.add_argument("--validity", default="365d", help="serving certificate lifetime (default 365d)")
        p.add_argument("--ca-validity", default="3650d", help="CA lifetime (default 3650d)")
        p.add_argument("--renew-before", default="30d", help="renew when expiring within this (default 30d)")
    certs.set_defaults(func=_certs)

    look = sub.add_parser("inspect", help="look at a run's staging files through a read-only pod (or say when "
                                          "and why its volume was reclaimed)")
    look.add_argument("dag_id", metavar="DAG_ID")
    look.add_argument("run_id", metavar="RUN_ID")
    look.add_argument("-n", "--namespace", help="the run's namespace (default: where its volume is recorded)")
    look.add_argument("--image", required=True,
                      help="the product image for the pod (the chart's image.repository:image.tag)")
    look.add_argument("--uid", type=int, default=DEFAULT_UID,
                      help="the pod's non-root uid; a task's uid reads what it wrote with mode 0600 (default "
                           f"{DEFAULT_UID})")
    look.add_argument("--ttl", default="1h", help="the pod ends by itself after this (default 1h)")
    look.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the pod to run")
    look.add_argument("--top", type=int, default=20, help="how many of the largest and of the newest files to show")
    look.add_argument("--limit", type=int, default=100_000, help="rank at most this many files (all are counted)")
    look.set_defaults(func=_inspect)

    check = sub.add_parser("check-admission", help="server-side dry-run an opted-in pod and check it is patched "
                                                   "(the chart's `helm test`)")
    check.add_argument("--namespace", required=True)
    check.set_defaults(func=_check)

    directory = sub.add_parser("directory", help="the shared-claim mode's run directories (what its task pods' "
                                                 "init containers and the GC's cleanup pods run)")
    directory_sub = directory.add_subparsers(dest="directory_command", required=True, metavar="ACTION")
    prepare = directory_sub.add_parser("prepare", help="mark a run's mounted directory as the run's and open it "
                                                       "to every uid (mode 1777)")
    prepare.add_argument("--path", required=True, help="the run's directory as mounted in the pod")
    cleanup = directory_sub.add_parser("cleanup", help="remove a run's directory from the shared volume")
    cleanup.add_argument("--root", required=True, help="where the whole shared volume is mounted")
    cleanup.add_argument("--result-file", help="also write the JSON result here (e.g. /dev/termination-log)")
    for p in (prepare, cleanup):
        p.add_argument("--dag-id", required=True)
        p.add_argument("--run-id", required=True)
        p.add_argument("--directory", required=True, help="the run's directory name (a DNS label)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "directory":  # runs in task and cleanup pods, whatever their environment holds
        return _directory(args)
    try:
        for name in unknown_settings(os.environ):
            print(f"leoflow-staging: warning: {name} is not a setting (ignored); see the README", file=sys.stderr)
        settings = from_env(os.environ).with_overrides(database_url=args.database_url,
                                                       kubeconfig=args.kubeconfig)
        code: int = args.func(settings, args)
        return code
    except SettingsError as exc:
        print(f"leoflow-staging {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (HoldError, RunProblem) as exc:
        print(f"leoflow-staging {args.command}: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, RunProblem) else EXIT_USAGE
    except StagingError as exc:
        print(f"leoflow-staging {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
