#!/usr/bin/env bash
# Make sure a PgBouncer binary exists (the GC lock is tested behind transaction pooling); install Debian's
# when root. A few seconds; nothing when it is already there.
set -euo pipefail
if [[ -n "${LEOFLOW_DEV_PGBOUNCER:-}" && -x "$LEOFLOW_DEV_PGBOUNCER" ]]; then exit 0; fi
if command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]]; then exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "ensure-pgbouncer: installing pgbouncer from Debian's packages (a few seconds)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
  # The package starts its own service on port 6432: the tests start their own, so stop that one.
  if command -v service >/dev/null; then service pgbouncer stop >/dev/null 2>&1 || true; fi
  exit 0
fi
echo "ensure-pgbouncer: pgbouncer not found; install pgbouncer or set LEOFLOW_DEV_PGBOUNCER" >&2
exit 1
