#!/usr/bin/env bash
# Make sure wrk (the HTTP load generator of `make bench`, a Debian package) is installed. apt keeps the
# downloaded .deb files in ~/.cache/leoflow-staging/wrk/<version>, so a reinstall downloads nothing;
# when wrk is installed this does nothing.
set -euo pipefail
command -v wrk >/dev/null && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "ensure-wrk: wrk is missing; install it (Debian: apt-get install wrk)" >&2
  exit 1
fi
echo "ensure-wrk: installing wrk from Debian's packages (~15 s)" >&2
cache="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}/wrk"
version=$(apt-cache policy wrk 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -z $version || $version == "(none)" ]]; then
  apt-get update -qq
  version=$(apt-cache policy wrk | awk '/Candidate:/ {print $2}')
fi
mkdir -p "$cache/$version/partial"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dir::Cache::archives="$cache/$version" \
  -o APT::Sandbox::User=root wrk >/dev/null
command -v wrk >/dev/null
