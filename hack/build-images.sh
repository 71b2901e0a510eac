#!/usr/bin/env bash
# Build the project's images with buildah from their recipes, with no Docker engine and no registry, and
# export each as an OCI archive (docs/images.md):
#   product      Dockerfile                            -> dist/leoflow-staging-<version>-<12 hex of the image ID>.oci.tar
#   task         hack/images/task/Containerfile        (busybox-static; also the provisioner's helper pods)
#   pause        hack/images/pause/Containerfile       (main.go beside it: waits for SIGTERM)
#   provisioner  hack/images/provisioner/Containerfile (rancher's local-path-provisioner v0.0.37)
#   airflow      hack/images/airflow/Containerfile     (stock Apache Airflow 3 worker, requirements/airflow.lock;
#                not part of `all`: only the Airflow-on-the-node test uses it)
#
#   bash hack/build-images.sh [all|product|task|pause|provisioner|airflow ...]   (default: all)
#   bash hack/build-images.sh --lock      regenerate requirements/image.lock from pyproject.toml
#
# Prints ONE JSON object on stdout, {"<name>": {"archive": "/abs/path.tar", "ref": "...", "id": "sha256:<image
# ID = config digest>", "digest": "sha256:<manifest digest>"}, ...}; progress goes to stderr.
#
# What this script does that the recipes cannot (everything else is in the Dockerfile/Containerfiles):
#   - the registry-free Python base (python:3.11-slim cannot be pulled here): debootstrap on the host, then
#     hack/images/python-base/Containerfile; passed to the recipes as --build-arg BASE=...
#   - the Go binaries of pause and the provisioner (no Go base image without a registry): the host's Go
#   - the build contexts holding host files (busybox-static's binary, those Go binaries)
#   - buildah's flags for this host: --isolation chroot --network host (never buildah's bridge network: it
#     changes the host's iptables and ip_forward), the host's CA bundle for pip (outgoing HTTPS is
#     intercepted here), --timestamp 0 and SOURCE_DATE_EPOCH=0 (reproducible), --layers (cached)
#   - the export: `buildah push ... oci-archive:<file>:<fully qualified ref>`, skipped when the archive of the
#     same image ID is already there
# Everything heavy is cached under ${LEOFLOW_DEV_CACHE:-~/.cache/leoflow-staging}: buildah's storage
# (buildah/), the base's rootfs (python-base/), the Go binaries, the small images' archives (images/).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES="$REPO/hack/images"
CACHE="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}"
DEBIAN_MIRROR="${LEOFLOW_DEV_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HOST_CA=/etc/ssl/certs/ca-certificates.crt   # the host's bundle (it trusts the intercepting proxy)

PRODUCT_REPO=leoflow.local/leoflow-staging
PAUSE_REF=leoflow.local/pause:3.10
TASK_REF=leoflow.local/task:busybox
PROVISIONER_VERSION=v0.0.37
PROVISIONER_REF=leoflow.local/local-path-provisioner:$PROVISIONER_VERSION
DEBIAN_SUITE=bookworm   # python3.11 and glibc 2.36, as python:3.11-slim-bookworm
BASE_PACKAGES=python3.11,python3-venv,ca-certificates,netbase,tzdata
SHADOW_LASTCHG=19518    # /etc/shadow's "last changed" day: bookworm's release (2023-06-10), not the build's date

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "build-images: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
sha() { sha256sum "$@" | cut -c1-64; }
short() { cut -c1-16; }
fileid() { stat -L -c '%s-%Y-%i' "$1"; }   # cheap identity of a cached binary (a rebuild gets a new one)

# buildah with its storage in the cache. The run root (locks, mount state) sits beside it.
bh() { buildah --root "$CACHE/buildah/storage" --runroot "$CACHE/buildah/run" --storage-driver overlay "$@"; }

# One recipe built: bud <containerfile> <context> <ref> [extra buildah args...]; sets IID to the image ID.
IID=""
bud() {
  local file=$1 context=$2 ref=$3; shift 3
  local iidfile; iidfile=$(mktemp)
  # --isolation chroot --network host: RUN steps use the host's network as is; buildah sets up no bridge,
  # no iptables chains, no ip_forward. --pull never: every FROM is local (a base built here, or scratch).
  # LEOFLOW_DEV_IMAGE_NO_CACHE=1 rebuilds every step (to check that two builds give the same image ID).
  bh bud --quiet --layers ${LEOFLOW_DEV_IMAGE_NO_CACHE:+--no-cache} --pull=never --isolation chroot --network host \
    --timestamp 0 --build-arg SOURCE_DATE_EPOCH=0 --identity-label=false \
    --iidfile "$iidfile" -f "$file" -t "$ref" "$@" "$context" >&2 \
    || { rm -f "$iidfile"; die "buildah bud -f ${file#"$REPO"/} failed (its messages are above)"; }
  IID=$(<"$iidfile"); rm -f "$iidfile"
  [[ "$IID" == sha256:* ]] || IID="sha256:$IID"
}

# pip inside a build: trust the host's CA bundle (bind-mounted over the image's own for RUN steps only).
PIP_ARGS=()
pip_args() {
  PIP_ARGS=()
  [[ -f "$HOST_CA" ]] && PIP_ARGS=(--volume "$HOST_CA:/etc/ssl/certs/ca-certificates.crt:ro"
                                   --build-arg "PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
  return 0
}

# Export: the archive is written only when the image ID differs from the one it was written for.
stamp_file() { echo "$CACHE/images/stamps/$1"; }
RESULTS=()
export_archive() {  # name ref archive
  local name=$1 ref=$2 archive=$3 stamp t0 digest
  stamp=$(stamp_file "$name")
  if [[ -f "$archive" && -f "$stamp" ]] && read -r s_id s_digest s_size <"$stamp" \
     && [[ "$s_id" == "$IID" && "$s_size" == "$(stat -c %s "$archive")" ]]; then
    RESULTS+=("$name" "$archive" "$ref" "$IID" "$s_digest"); return 0
  fi
  t0=$(now)
  mkdir -p "$(dirname "$archive")" "$(dirname "$stamp")"
  rm -f "$archive.tmp" "$archive.digest"
  # The fully qualified ref goes into index.json (org.opencontainers.image.ref.name): `ctr images import`
  # names the image by it and the kubelet finds it (a bare name:tag would be stored as is).
  bh push --quiet --digestfile "$archive.digest" "$ref" "oci-archive:$archive.tmp:$ref" >&2 \
    || die "buildah push $ref to $archive failed"
  mv "$archive.tmp" "$archive"
  digest=$(<"$archive.digest"); rm -f "$archive.digest"
  echo "$IID $digest $(stat -c %s "$archive")" >"$stamp"
  log "$ref: $(du -h "$archive" | cut -f1) archive in $(since "$t0") -> $archive"
  RESULTS+=("$name" "$archive" "$ref" "$IID" "$digest")
}

ensure_go() { command -v go >/dev/null || die "Go is needed to build $1 (https://go.dev/doc/install)"; }
go_env() { export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local GOMAXPROCS="${GOMAXPROCS:-2}"; }

context_dir() {  # name: an empty build context folder in the cache
  local d="$CACHE/images/context/$1"
  rm -rf "$d"; mkdir -p "$d"; echo "$d"
}

# ------------------------------------------------------------------------------------------------ base
unmount_under() {  # dir: undo mounts a failed debootstrap may have left inside
  local dir m
  dir=$(realpath -m "$1")
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}
remove_tree() { [[ -e "$1" ]] || return 0; unmount_under "$1"; rm -rf --one-file-system "$1"; }

BASE_REF=""
build_base() {  # the registry-free python:3.11-slim stand-in, as localhost/leoflow-python-base:<key>
  local key dir t0
  # The rootfs is cached by what debootstrap is asked for (suite, variant, packages, mirror) and the trim; the
  # image by that and its Containerfile.
  key=$({ printf '%s|%s|%s|%s\n' "$DEBIAN_SUITE" minbase "$BASE_PACKAGES" "$DEBIAN_MIRROR"; declare -f trim_rootfs; } \
        | sha | short)
  dir="$CACHE/python-base/$DEBIAN_SUITE-$key"
  BASE_REF="localhost/leoflow-python-base:$DEBIAN_SUITE-$({ echo "$key"; cat "$IMAGES/python-base/Containerfile"; } | sha | short)"
  bh inspect --type image "$BASE_REF" >/dev/null 2>&1 && return 0
  [[ $(id -u) -eq 0 ]] || die "building the Python base needs root (debootstrap); run: sudo make image"
  t0=$(now)
  if [[ ! -f "$dir/rootfs.tar" ]]; then
    local tmp="$dir.tmp"
    remove_tree "$tmp"; mkdir -p "$tmp"
    log "debootstrap $DEBIAN_SUITE minbase + $BASE_PACKAGES from $DEBIAN_MIRROR (~1-2.5 min, once; cached in $dir)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$tmp/rootfs" "$DEBIAN_MIRROR" \
      >"$tmp/debootstrap.log" 2>&1 \
      || { unmount_under "$tmp"; tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed (log: $tmp/debootstrap.log)"; }
    unmount_under "$tmp"
    trim_rootfs "$tmp/rootfs"
    # Sorted, numeric owners (group shadow etc. kept): the image's layer gets the same bytes from the same tree.
    tar --sort=name --numeric-owner --xattrs --one-file-system -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" . \
      || die "packing the base rootfs failed"
    rm -rf --one-file-system "$tmp/rootfs"
    remove_tree "$dir"; mv "$tmp" "$dir"
    local d; for d in "$CACHE/python-base"/*; do [[ "$d" == "$dir" ]] || remove_tree "$d"; done
  fi
  log "building $BASE_REF (hack/images/python-base/Containerfile: venv at /usr/local, stdlib .pyc) (~30 s)"
  bud "$IMAGES/python-base/Containerfile" "$dir" "$BASE_REF"
  log "base ready in $(since "$t0")"
}

trim_rootfs() {  # what debootstrap leaves that an image does not need, or that names the build host or day
  (
    cd "$1"
    rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian usr/share/linda \
      var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old var/cache/ldconfig/aux-cache
    find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    find var/log -type f -delete
    : >etc/hostname; : >etc/resolv.conf
    sed -i -E "s/^([^:]*:[^:]*:)[0-9]*:/\\1$SHADOW_LASTCHG:/" etc/shadow
    # Debian's .pyc files check their source's mtime, which the image layers set to 0: the base's
    # Containerfile compiles hash-checked ones instead.
    find . -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
    find dev -mindepth 1 -delete   # the runtime mounts its own /dev
  )
}

# ------------------------------------------------------------------------------------------------ product
build_product() {
  [[ -f "$REPO/requirements/image.lock" ]] || die "requirements/image.lock is missing (bash hack/build-images.sh --lock)"
  build_base
  local t0 version tag ref archive old
  t0=$(now)
  log "buildah bud Dockerfile (BASE=$BASE_REF; cold ~1 min, nothing changed ~5 s)"
  pip_args
  bud "$REPO/Dockerfile" "$REPO" "$PRODUCT_REPO:latest-build" --build-arg "BASE=$BASE_REF" "${PIP_ARGS[@]}"
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -1)
  tag="$version-${IID#sha256:}"; tag=${tag:0:$(( ${#version} + 13 ))}
  ref="$PRODUCT_REPO:$tag"
  bh tag "$PRODUCT_REPO:latest-build" "$ref"
  log "$ref built in $(since "$t0") (image ID $IID)"
  archive="$REPO/dist/leoflow-staging-$tag.oci.tar"
  export_archive product "$ref" "$archive"
  for old in "$REPO"/dist/leoflow-staging-*.oci.tar; do
    [[ "$old" == "$archive" || ! -f "$old" ]] && continue
    log "removing the older $(basename "$old")"; rm -f "$old"
  done
  # Older product tags in buildah's storage (their layers stay while a cached build step uses them).
  local tags
  tags=$(bh images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep -F "$PRODUCT_REPO:" || true)
  for old in $tags; do
    [[ "$old" == "$ref" || "$old" == "$PRODUCT_REPO:latest-build" ]] || bh rmi "$old" >/dev/null 2>&1 || true
  done
}

# ------------------------------------------------------------------------------------------------ pause
build_pause() {
  local src_hash bin_dir bin ctx
  src_hash=$(sha "$IMAGES/pause/main.go" | short)
  bin_dir="$CACHE/pause/3.10-$src_hash"; bin="$bin_dir/pause"
  if [[ ! -x "$bin" ]]; then
    ensure_go "the pause binary"; go_env
    local t0 work="$CACHE/work/pause" gover
    t0=$(now)
    log "go build pause (~10 s, once; cached in $bin_dir)"
    rm -rf "$work" "$bin_dir.tmp"; mkdir -p "$work" "$bin_dir.tmp"
    gover=$(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1.0/')
    printf 'module leoflow.local/pause\n\ngo %s\n' "$gover" >"$work/go.mod"
    cp "$IMAGES/pause/main.go" "$work/main.go"
    (cd "$work" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin_dir.tmp/pause" .) >&2 \
      || die "go build pause failed"
    # It must exit 0 on SIGTERM (a sandbox that fails to stop blocks pod teardown).
    "$bin_dir.tmp/pause" & local pid=$!
    sleep 0.2; kill -TERM "$pid"; wait "$pid" || die "the pause binary did not exit 0 on SIGTERM"
    rm -rf "$bin_dir"; mv "$bin_dir.tmp" "$bin_dir"; rm -rf "$work"
    log "pause binary built in $(since "$t0")"
  fi
  ctx=$(context_dir pause)
  cp -p "$bin" "$ctx/pause"
  bud "$IMAGES/pause/Containerfile" "$ctx" "$PAUSE_REF"
  export_archive pause "$PAUSE_REF" "$CACHE/images/pause-3.10.oci.tar"
}

# ------------------------------------------------------------------------------------------------ task
build_task() {
  local bb ctx
  bb=$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -1 || true)
  [[ -x "$bb" ]] || die "Debian's busybox-static is needed (bash hack/ensure-buildah.sh installs it)"
  ctx=$(context_dir task)
  cp -p "$bb" "$ctx/busybox"
  bud "$IMAGES/task/Containerfile" "$ctx" "$TASK_REF"
  export_archive task "$TASK_REF" "$CACHE/images/task-busybox.oci.tar"
}

# ------------------------------------------------------------------------------------------------ provisioner
build_provisioner() {
  local bin_dir="$CACHE/local-path-provisioner/$PROVISIONER_VERSION" ctx
  local bin="$bin_dir/local-path-provisioner"
  if [[ ! -x "$bin" ]]; then
    ensure_go "local-path-provisioner"; go_env
    local t0 work="$CACHE/work/local-path-provisioner"
    t0=$(now)
    log "go install github.com/rancher/local-path-provisioner@$PROVISIONER_VERSION (~1.5 min, once; cached in $bin_dir)"
    rm -rf "$work" "$bin_dir.tmp"; mkdir -p "$work" "$bin_dir.tmp"
    # The checksum database lacks this version; the module proxy serves it.
    (cd "$work" && GONOSUMDB=github.com/rancher/local-path-provisioner GOBIN="$bin_dir.tmp" \
      go install -trimpath -ldflags "-s -w -X main.VERSION=$PROVISIONER_VERSION" \
      "github.com/rancher/local-path-provisioner@$PROVISIONER_VERSION") >&2 \
      || die "go install local-path-provisioner failed"
    "$bin_dir.tmp/local-path-provisioner" --help >/dev/null 2>&1 || die "local-path-provisioner --help failed"
    rm -rf "$bin_dir"; mv "$bin_dir.tmp" "$bin_dir"; rm -rf "$work"
    log "local-path-provisioner built in $(since "$t0")"
  fi
  ctx=$(context_dir provisioner)
  cp -p "$bin" "$ctx/local-path-provisioner"
  mkdir "$ctx/tmp"; chmod 1777 "$ctx/tmp"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$ctx" -cf "$ctx/tmp.tar" tmp; rmdir "$ctx/tmp"
  bud "$IMAGES/provisioner/Containerfile" "$ctx" "$PROVISIONER_REF"
  export_archive provisioner "$PROVISIONER_REF" "$CACHE/images/local-path-provisioner-$PROVISIONER_VERSION.oci.tar"
}

# ------------------------------------------------------------------------------------------------ airflow
build_airflow() {
  local lock="$REPO/requirements/airflow.lock" version ref t0
  build_base
  version=$(sed -n 's/^apache-airflow==//p' "$lock")
  t0=$(now)
  log "buildah bud hack/images/airflow/Containerfile (Apache Airflow $version; cold ~2-3 min, warm ~2 s)"
  pip_args
  bud "$IMAGES/airflow/Containerfile" "$REPO/requirements" "leoflow.local/airflow:latest-build" \
    --build-arg "BASE=$BASE_REF" "${PIP_ARGS[@]}"
  ref="leoflow.local/airflow:$version-$(echo "${IID#sha256:}" | cut -c1-12)"
  bh tag "leoflow.local/airflow:latest-build" "$ref"
  log "$ref built in $(since "$t0")"
  export_archive airflow "$ref" "$CACHE/images/airflow.oci.tar"
}

# ------------------------------------------------------------------------------------------------ lock
write_lock() {
  local py="${PYTHON311:-python3.11}"
  command -v "$py" >/dev/null || die "$py is needed to resolve the lock (set PYTHON311=...)"
  local venv; venv=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$venv'" EXIT
  log "resolving [project] dependencies of pyproject.toml in a fresh $py venv (~30 s)"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  local deps
  mapfile -t deps < <("$venv/bin/python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$REPO/pyproject.toml")
  "$venv/bin/pip" install -q "${deps[@]}" >&2
  mkdir -p "$REPO/requirements"
  {
    echo "# Runtime dependencies of the leoflow-staging image, pinned exactly: the [project] dependencies of"
    echo "# pyproject.toml, resolved with Python 3.11. The Dockerfile installs exactly these (then the project"
    echo "# itself with --no-deps), so the image does not drift with PyPI."
    echo "# Regenerate after changing those dependencies: bash hack/build-images.sh --lock"
    echo
    "$venv/bin/pip" freeze
  } >"$REPO/requirements/image.lock.tmp"
  mv "$REPO/requirements/image.lock.tmp" "$REPO/requirements/image.lock"
  log "wrote requirements/image.lock ($(grep -c '==' "$REPO/requirements/image.lock") pins)"
}

# ------------------------------------------------------------------------------------------------ main
summary() {  # name archive ref id digest ... -> one JSON object
  python3 -c '
import json, sys
a = sys.argv[1:]
print(json.dumps({a[i]: {"archive": a[i + 1], "ref": a[i + 2], "id": a[i + 3], "digest": a[i + 4]}
                  for i in range(0, len(a), 5)}))' "$@"
}

leftovers() {  # what buildah must never leave on this host (it would fight the node's own networking)
  local found=""
  ip link show podman0 >/dev/null 2>&1 && found+=" the podman0 bridge;"
  command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -qi netavark && found+=" NETAVARK iptables chains;"
  [[ -z "$found" ]] || die "host changes found after the build:$found remove them (ip link delete podman0; iptables -F/-X the NETAVARK chains)"
}

main() {
  if [[ "${1:-}" == "--lock" ]]; then write_lock; return; fi
  local names=() n
  for n in "${@:-all}"; do
    case "$n" in
      all) names+=(pause task provisioner product) ;;
      pause|task|provisioner|product|airflow) names+=("$n") ;;
      -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2; return 0 ;;
      *) die "unknown image $n (all, product, task, pause, provisioner, airflow)" ;;
    esac
  done
  command -v buildah >/dev/null || die "buildah is needed (bash hack/ensure-buildah.sh installs it)"
  mkdir -p "$CACHE/images" "$CACHE/buildah"
  # One build at a time per cache (buildah's storage copes, the contexts and stamps would not).
  exec 9>"$CACHE/images/.lock"
  if ! flock -n 9; then
    log "another build-images run holds $CACHE/images/.lock; waiting for it"
    flock 9
  fi
  local t0 seen=" " old
  t0=$(now)
  # What the hand-written OCI writer this replaced kept in the cache (layer trees and blobs, ~1 GB).
  for old in "$CACHE"/{rootfs,python-deps,airflow-layer,images/blobs} "$CACHE"/images/airflow-*.oci.tar; do
    [[ -e "$old" ]] || continue
    log "removing the outdated cache $old"; remove_tree "$old"
  done
  for n in "${names[@]}"; do
    [[ "$seen" == *" $n "* ]] && continue
    seen+="$n "
    "build_$n"
  done
  leftovers
  summary "${RESULTS[@]}"
  log "done in $(since "$t0")"
}

main "$@"
