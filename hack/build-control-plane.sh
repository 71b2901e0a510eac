#!/usr/bin/env bash
# Build (or find) the real control-plane binaries the tests run against:
# etcd, kube-apiserver, kube-controller-manager (from their Go modules, version
# stamped in) and helm. Prints the folder that holds all four (KUBEBUILDER_ASSETS
# convention) on stdout; progress goes to stderr.
#
# With --node it also builds what a real node needs: kube-scheduler, kubelet and
# kube-proxy (same wrapper module, sharing Go's build cache) and links them into
# the same folder.
#
# Cached by version under ${LEOFLOW_DEV_CACHE:-~/.cache/leoflow-staging}; a
# second run builds nothing. If KUBEBUILDER_ASSETS already holds etcd,
# kube-apiserver and kube-controller-manager, those are used and nothing is built
# for them (helm is then taken from that folder, from PATH, or built).
set -euo pipefail

KUBE_VERSION="${LEOFLOW_DEV_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${LEOFLOW_DEV_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${LEOFLOW_DEV_HELM_VERSION:-v3.21.4}"
CACHE="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}"

log() { echo "build-control-plane: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_all() {  # folder, names...
  local dir=$1; shift
  for n in "$@"; do [[ -x "$dir/$n" ]] || return 1; done
}

need_go() {
  command -v go >/dev/null || die "Go is needed to build $1 (or set KUBEBUILDER_ASSETS to a folder with the binaries)"
}

go_env() {
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
  # Each binary needs ~2 GiB to link; keep parallelism modest on small machines.
  export GOMAXPROCS="${GOMAXPROCS:-2}"
}

build_kube() {  # cache subfolder, commands...
  local out="$CACHE/$1/$KUBE_VERSION"; shift
  local cmds=("$@")
  if have_all "$out" "${cmds[@]}"; then echo "$out"; return; fi
  need_go "kube-apiserver"
  go_env
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local patch="${KUBE_VERSION##*.}"
  local staging_version="v0.${minor}.${patch}"
  local work="$CACHE/work/kubernetes-$KUBE_VERSION-${cmds[0]}"
  rm -rf "$work"; mkdir -p "$work" "$out.tmp"
  log "building Kubernetes $KUBE_VERSION (staging modules $staging_version) in $work"
  local kmod
  kmod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$kmod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION"
  local gover
  gover=$(sed -n 's/^go \(.*\)/\1/p' "$kmod")
  {
    echo "module leoflow.local/kube-wrapper"
    echo
    echo "go $gover"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # Every staging module k8s.io/kubernetes replaces with a local path becomes the published v0.N.M.
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$kmod"
    echo ")"
  } >"$work/go.mod"
  local now; now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$now -X $pkg.gitCommit=module-proxy-$KUBE_VERSION"
  done
  (cd "$work" && go mod download k8s.io/kubernetes >&2)
  for cmd in "${cmds[@]}"; do
    log "go build $cmd (~2-5 min cold on 2 cores; Go's build cache makes later ones faster)"
    (cd "$work" && go build -trimpath -ldflags "$ld" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd") >&2 \
      || die "go build k8s.io/kubernetes/cmd/$cmd@$KUBE_VERSION failed"
  done
  rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$work"
  echo "$out"
}

build_etcd() {
  local out="$CACHE/etcd/$ETCD_VERSION"
  if have_all "$out" etcd; then echo "$out"; return; fi
  need_go "etcd"
  go_env
  local work="$CACHE/work/etcd-$ETCD_VERSION"
  rm -rf "$work"; mkdir -p "$work" "$out.tmp"
  log "building etcd $ETCD_VERSION in $work"
  local gover
  gover=$(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1.0/')
  cat >"$work/go.mod" <<MOD
module leoflow.local/etcd-wrapper

go $gover

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$work/main.go" <<'GO'
// Command etcd is the etcd server, built from its published Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .) >&2 \
    || die "go build etcd $ETCD_VERSION failed"
  rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$work"
  echo "$out"
}

build_helm() {
  # Helm defaults its idea of the cluster version to 1.20 unless stamped: stamp the version we test on.
  local kminor="${KUBE_VERSION#v1.}"; kminor="${kminor%%.*}"
  local out="$CACHE/helm/$HELM_VERSION-k8s1.$kminor"
  if have_all "$out" helm; then echo "$out"; return; fi
  need_go "helm"
  go_env
  local work="$CACHE/work/helm-$HELM_VERSION"
  rm -rf "$work"; mkdir -p "$work" "$out.tmp"
  log "building helm $HELM_VERSION"
  local major="${HELM_VERSION%%.*}"
  local ld="-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"
  for pkg in pkg/chartutil pkg/lint/rules; do
    ld+=" -X helm.sh/helm/$major/$pkg.k8sVersionMajor=1 -X helm.sh/helm/$major/$pkg.k8sVersionMinor=$kminor"
  done
  (cd "$work" && GOBIN="$out.tmp" go install -trimpath -ldflags "$ld" "helm.sh/helm/$major/cmd/helm@$HELM_VERSION") >&2 \
    || die "go install helm $HELM_VERSION failed"
  rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$work"
  echo "$out"
}

main() {
  local node=0
  [[ "${1:-}" == "--node" ]] && node=1
  mkdir -p "$CACHE"
  local kube_dir etcd_dir helm_dir assets
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && have_all "$KUBEBUILDER_ASSETS" etcd kube-apiserver kube-controller-manager; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    kube_dir=$KUBEBUILDER_ASSETS; etcd_dir=$KUBEBUILDER_ASSETS
    if have_all "$KUBEBUILDER_ASSETS" helm; then helm_dir=$KUBEBUILDER_ASSETS
    elif command -v helm >/dev/null; then helm_dir=$(dirname "$(command -v helm)")
    else helm_dir=$(build_helm); fi
  else
    [[ -z "${KUBEBUILDER_ASSETS:-}" ]] || log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks etcd/kube-apiserver/kube-controller-manager; building"
    etcd_dir=$(build_etcd)
    kube_dir=$(build_kube kubernetes kube-apiserver kube-controller-manager)
    helm_dir=$(build_helm)
  fi
  assets="$CACHE/assets/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && [[ "$kube_dir" == "$KUBEBUILDER_ASSETS" ]]; then
    assets="$CACHE/assets/from-kubebuilder-assets"
  fi
  mkdir -p "$assets"
  ln -sfn "$etcd_dir/etcd" "$assets/etcd"
  ln -sfn "$kube_dir/kube-apiserver" "$assets/kube-apiserver"
  ln -sfn "$kube_dir/kube-controller-manager" "$assets/kube-controller-manager"
  ln -sfn "$helm_dir/helm" "$assets/helm"
  if (( node )); then
    local node_dir
    node_dir=$(build_kube kubernetes-node kube-scheduler kubelet kube-proxy)
    for n in kube-scheduler kubelet kube-proxy; do ln -sfn "$node_dir/$n" "$assets/$n"; done
  fi
  echo "$assets"
}

main "$@"
