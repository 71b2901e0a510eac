#!/usr/bin/env bash
# Build (or find) what the observability tests need, from published Go modules:
#   promtool and prometheus (module github.com/prometheus/prometheus), and the
#   prometheus-operator CRDs (ServiceMonitor, PrometheusRule) taken from the
#   module github.com/prometheus-operator/prometheus-operator.
# Prints the folder holding `promtool`, `prometheus` and `crds/` on stdout;
# progress goes to stderr.
#
# Cached by version under ${LEOFLOW_STAGING_CACHE:-~/.cache/leoflow-staging}; a
# second run builds nothing. With --promtool-only, prometheus is not built.
set -euo pipefail

# The Go module's version v0.3NN.x is Prometheus 3.NN.x.
PROM_VERSION="${LEOFLOW_STAGING_PROMETHEUS_VERSION:-v0.316.0}"
PROMOP_VERSION="${LEOFLOW_STAGING_PROMETHEUS_OPERATOR_VERSION:-v0.95.2}"
CACHE="${LEOFLOW_STAGING_CACHE:-$HOME/.cache/leoflow-staging}"

log() { echo "build-prometheus: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

go_env() {
  command -v go >/dev/null || die "Go is needed to build $1"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
  export GOMAXPROCS="${GOMAXPROCS:-2}"
}

build_prom_cmd() {  # command name
  local cmd=$1 out="$CACHE/prometheus/$PROM_VERSION"
  [[ -x "$out/$cmd" ]] && return
  go_env "$cmd"
  local work="$CACHE/work/prometheus-$PROM_VERSION-$cmd"
  rm -rf "$work"; mkdir -p "$work" "$out"
  local pmod
  pmod=$(cd "$work" && go mod download -json "github.com/prometheus/prometheus@$PROM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$pmod" ]] || die "could not download github.com/prometheus/prometheus@$PROM_VERSION"
  local gover; gover=$(sed -n 's/^go \(.*\)/\1/p' "$pmod")
  printf 'module leoflow.local/prometheus-wrapper\n\ngo %s\n\nrequire github.com/prometheus/prometheus %s\n' \
    "$gover" "$PROM_VERSION" >"$work/go.mod"
  # Carry over the module's own replace directives, if any (a wrapper does not inherit them).
  sed -n '/^replace (/,/^)/p; /^replace [^(]/p' "$pmod" >>"$work/go.mod"
  local minor="${PROM_VERSION#v0.}"; minor="${minor%%.*}"; minor="${minor#3}"
  local patch="${PROM_VERSION##*.}"
  local ld="-s -w -X github.com/prometheus/common/version.Version=3.$((10#$minor)).$patch"
  ld+=" -X github.com/prometheus/common/version.Branch=module-proxy -X github.com/prometheus/common/version.Revision=$PROM_VERSION"
  log "go build $cmd from github.com/prometheus/prometheus@$PROM_VERSION (~3-6 min cold on 2 cores, once)"
  local t0=$SECONDS
  (cd "$work" && go mod download github.com/prometheus/prometheus >&2 \
    && go build -trimpath -ldflags "$ld" -o "$out/$cmd.tmp" "github.com/prometheus/prometheus/cmd/$cmd") >&2 \
    || die "go build github.com/prometheus/prometheus/cmd/$cmd@$PROM_VERSION failed"
  mv "$out/$cmd.tmp" "$out/$cmd"; rm -rf "$work"
  log "built $cmd in $((SECONDS - t0)) s"
}

fetch_crds() {
  local out="$CACHE/prometheus-operator-crds/$PROMOP_VERSION"
  if [[ -s "$out/servicemonitors.yaml" && -s "$out/prometheusrules.yaml" ]]; then echo "$out"; return; fi
  go_env "prometheus-operator CRDs"
  local work="$CACHE/work/promop-$PROMOP_VERSION"
  rm -rf "$work"; mkdir -p "$work" "$out"
  log "fetching the prometheus-operator $PROMOP_VERSION CRDs from its Go module"
  local dir
  dir=$(cd "$work" && GOFLAGS= go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  local src="$dir/example/prometheus-operator-crd"
  [[ -d "$src" ]] || die "no example/prometheus-operator-crd in github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION"
  cp "$src/monitoring.coreos.com_servicemonitors.yaml" "$out/servicemonitors.yaml"
  cp "$src/monitoring.coreos.com_prometheusrules.yaml" "$out/prometheusrules.yaml"
  rm -rf "$work"
  echo "$out"
}

main() {
  local only_promtool=0
  [[ "${1:-}" == "--promtool-only" ]] && only_promtool=1
  mkdir -p "$CACHE"
  build_prom_cmd promtool
  (( only_promtool )) || build_prom_cmd prometheus
  local crds; crds=$(fetch_crds)
  local out="$CACHE/prometheus/$PROM_VERSION"
  ln -sfn "$crds" "$out/crds"
  echo "$out"
}

main "$@"
