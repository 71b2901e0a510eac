#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, postgres) exist; install Debian's when root.
set -euo pipefail
if [[ -n "${LEOFLOW_DEV_PG_BIN:-}" && -x "$LEOFLOW_DEV_PG_BIN/initdb" ]]; then exit 0; fi
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then exit 0; fi
if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "ensure-postgres: installing postgresql from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "ensure-postgres: PostgreSQL server binaries not found; install postgresql or set LEOFLOW_DEV_PG_BIN" >&2
exit 1
