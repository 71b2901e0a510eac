"""The ``leoflow-staging`` console script: one entry point, one subcommand per program."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from leoflow_staging import __version__


def _not_implemented(args: argparse.Namespace) -> int:
    print(f"leoflow-staging {args.command}: not implemented yet", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leoflow-staging",
        description="Per-DAG-run ReadWriteMany staging volumes for Leoflow.",
    )
    parser.add_argument("--version", action="version", version=f"leoflow-staging {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the HTTPS mutating admission webhook (gunicorn)")
    gc = sub.add_parser("gc", help="run one GC sweep (what the CronJob runs)")
    gc.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    volumes = sub.add_parser("volumes", help="show the staging_volumes audit table")
    volumes.add_argument("--state")
    volumes.add_argument("--dag")
    volumes.add_argument("--run")
    volumes.add_argument("--json", action="store_true")
    sub.add_parser("certs", help="CA and serving certificate generation, Secret and caBundle wiring")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _not_implemented(args)


if __name__ == "__main__":
    sys.exit(main())
