#!/usr/bin/env bash
# Build (or find) what the observability tests need, from published Go modules:
#   promtool and prometheus (module github.com/prometheus/prometheus), and the
#   prometheus-operator CRDs (ServiceMonitor, PrometheusRule, ...) generated with
#   controller-gen from the operator's published API module
#   github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring.
# Prints the folder holding `promtool`, `prometheus` and `crds/` on stdout;
# progress goes to stderr.
#
# Cached by version under ${LEOFLOW_DEV_CACHE:-~/.cache/leoflow-staging}; a
# second run builds nothing. Arguments pick parts (default: all): promtool, prometheus, crds.
set -euo pipefail

# The Go module's version v0.3NN.x is Prometheus 3.NN.x.
PROM_VERSION="${LEOFLOW_DEV_PROMETHEUS_VERSION:-v0.316.0}"
PROMOP_VERSION="${LEOFLOW_DEV_PROMETHEUS_OPERATOR_VERSION:-v0.95.2}"
CONTROLLER_TOOLS_VERSION="${LEOFLOW_DEV_CONTROLLER_TOOLS_VERSION:-v0.23.0}"
CACHE="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}"

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
  # remove_all_sd: no cloud service discovery (rules, tests and a static scrape need none): a much smaller build.
  log "go build $cmd from github.com/prometheus/prometheus@$PROM_VERSION (~5-20 min cold on 2 busy cores, once)"
  local t0=$SECONDS
  (cd "$work" && go mod download github.com/prometheus/prometheus >&2 \
    && go build -trimpath -tags remove_all_sd -ldflags "$ld" -o "$out/$cmd.tmp" "github.com/prometheus/prometheus/cmd/$cmd") >&2 \
    || die "go build github.com/prometheus/prometheus/cmd/$cmd@$PROM_VERSION failed"
  mv "$out/$cmd.tmp" "$out/$cmd"; rm -rf "$work"
  log "built $cmd in $((SECONDS - t0)) s"
}

fetch_crds() {
  # The operator's root module is not served by the module proxy; its API module is. The CRDs are
  # generated from that module's Go types with controller-gen, as the operator's own build does.
  local out="$CACHE/prometheus-operator-crds/$PROMOP_VERSION"
  if [[ -s "$out/monitoring.coreos.com_servicemonitors.yaml" && -s "$out/monitoring.coreos.com_prometheusrules.yaml" ]]; then
    echo "$out"; return
  fi
  go_env "prometheus-operator CRDs"
  local tools="$CACHE/controller-gen/$CONTROLLER_TOOLS_VERSION"
  if [[ ! -x "$tools/controller-gen" ]]; then
    log "go install controller-gen $CONTROLLER_TOOLS_VERSION (~1-2 min cold, once)"
    (cd "$CACHE" && GOBIN="$tools" go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION") >&2 \
      || die "go install controller-gen failed"
  fi
  local work="$CACHE/work/promop-$PROMOP_VERSION"
  rm -rf "$work"; mkdir -p "$work" "$out.tmp"
  log "generating the prometheus-operator $PROMOP_VERSION CRDs from its API module"
  local api=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
  printf 'module leoflow.local/promop-crds\n\ngo 1.24\n\nrequire %s %s\n' "$api" "$PROMOP_VERSION" >"$work/go.mod"
  printf 'package crds\n\nimport _ "%s/v1"\n' "$api" >"$work/crds.go"
  (cd "$work" && go mod tidy >&2 \
    && "$tools/controller-gen" crd:crdVersions=v1,allowDangerousTypes=true "paths=$api/v1" "output:crd:dir=$out.tmp") >&2 \
    || die "controller-gen on $api@$PROMOP_VERSION failed"
  rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$work"
  echo "$out"
}

main() {
  local parts=("$@")
  (( ${#parts[@]} )) || parts=(promtool prometheus crds)
  local out="$CACHE/prometheus/$PROM_VERSION"
  mkdir -p "$out"
  for part in "${parts[@]}"; do
    case "$part" in
      promtool|prometheus) build_prom_cmd "$part" ;;
      crds) local crds; crds=$(fetch_crds); ln -sfn "$crds" "$out/crds" ;;
      *) die "unknown part $part (promtool, prometheus, crds)" ;;
    esac
  done
  echo "$out"
}

main "$@"
