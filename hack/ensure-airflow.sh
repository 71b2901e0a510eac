#!/usr/bin/env bash
# A virtualenv with stock Apache Airflow 3 and the cncf-kubernetes provider, pinned by
# requirements/airflow.lock, for the tests that use Airflow itself (tests/airflow) and `make demo-airflow`.
# Cached by the lock's hash under ${LEOFLOW_DEV_CACHE:-~/.cache/leoflow-staging}/airflow/<hash>/venv:
# cold ~2-3 min (~450 MB from PyPI), warm: nothing to do. Prints the venv's path on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}"
LOCK="$ROOT/requirements/airflow.lock"
KEY="$(sha256sum "$LOCK" | cut -c1-16)"
DEST="$CACHE/airflow/$KEY"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -f "$DEST/.complete" ]]; then
  version="$(sed -n 's/^apache-airflow==//p' "$LOCK")"
  echo "ensure-airflow: installing Apache Airflow $version + cncf-kubernetes provider into $DEST/venv (cold ~2-3 min, ~450 MB; cached afterwards)" >&2
  start=$SECONDS
  rm -rf "$DEST" && mkdir -p "$DEST"
  # A venv's scripts name their interpreter by absolute path, so it is built in place; the marker
  # written last tells a complete venv from one an interrupted run left (which the next run rebuilds).
  "$PYTHON" -m venv "$DEST/venv"
  "$DEST/venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$LOCK"
  "$DEST/venv/bin/pip" check >&2
  touch "$DEST/.complete"
  echo "ensure-airflow: done in $((SECONDS - start)) s" >&2
fi
echo "$DEST/venv"
