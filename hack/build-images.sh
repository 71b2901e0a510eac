#!/usr/bin/env bash
# Build the OCI image archives the project runs as, with no Docker engine and no registry:
#   product      leoflow.local/leoflow-staging:<version>-<12 hex of the sources> -> dist/leoflow-staging-<tag>.oci.tar
#   task         leoflow.local/task:busybox                        (busybox-static; also the provisioner's helper pods)
#   pause        leoflow.local/pause:3.10                          (a static Go binary waiting for SIGTERM)
#   provisioner  leoflow.local/local-path-provisioner:v0.0.37     (rancher's, built from its Go module)
#   airflow      leoflow.local/airflow:<version>-<16 hex of the lock> (stock Apache Airflow 3 worker, from
#                requirements/airflow.lock; not part of `all`: only the Airflow-on-the-node test builds it)
#
#   bash hack/build-images.sh [all|product|task|pause|provisioner ...]   (default: all)
#   bash hack/build-images.sh --lock      regenerate requirements/image.lock from pyproject.toml
#
# Prints ONE JSON object on stdout, {"<name>": {"archive": "/abs/path.tar", "ref": "..."}, ...}, for the
# requested images; progress goes to stderr. Everything heavy is cached under
# ${LEOFLOW_DEV_CACHE:-~/.cache/leoflow-staging} (the Debian rootfs, the locked Python dependencies,
# the Go binaries, layer blobs); a second run with nothing changed rebuilds nothing and prints the same
# JSON. Archives are written by leoflow_staging/devenv/oci.py (stdlib only): deterministic layers, so
# the same inputs give the same digests. See docs/images.md.
set -euo pipefail
umask 022   # layer folders carry their modes: never 0700 ones over the base's /usr or /etc

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}"
PYTHON="${PYTHON:-python3}"
OCI_PY="$REPO/leoflow_staging/devenv/oci.py"
DEBIAN_MIRROR="${LEOFLOW_DEV_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

PAUSE_REF=leoflow.local/pause:3.10
TASK_REF=leoflow.local/task:busybox
PROVISIONER_VERSION=v0.0.37
PROVISIONER_REF=leoflow.local/local-path-provisioner:$PROVISIONER_VERSION
PRODUCT_REPO=leoflow.local/leoflow-staging
# The product's base: Debian bookworm minbase (its python3 is 3.11, the Dockerfile's minor).
DEBIAN_SUITE=bookworm
BASE_PACKAGES=python3,ca-certificates
BASE_RECIPE=2   # bump when the trim/compile steps of the base change (new cache key)
DEPS_RECIPE=3   # bump when the way the locked dependencies are installed changes
SHADOW_LASTCHG=19518   # /etc/shadow's "last changed" day: bookworm's release (2023-06-10), not the build's date
PY_SITE=usr/local/lib/python3.11/dist-packages   # a site dir of Debian's python3 (like /usr/local in the Dockerfile)
STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TASK_APPLETS="sh dd md5sum sha256sum mv cp rm mkdir ls cat sleep echo test [ head tail wc find du stat touch sync
  date seq xargs tr cut grep sed awk env true false kill id chmod rmdir"

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "build-images: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
oci() { "$PYTHON" -P "$OCI_PY" "$@"; }
sha() { sha256sum "$@" | cut -c1-64; }
short() { cut -c1-16; }
fileid() { stat -L -c '%s-%Y-%i' "$1"; }   # cheap identity of a cached binary (a rebuild gets a new one)

go_env() {
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
  export GOMAXPROCS="${GOMAXPROCS:-2}"
}

need_go() { command -v go >/dev/null || die "Go is needed to build $1 (https://go.dev/doc/install)"; }

need_python() {  # also resolves $PYTHON to the interpreter itself (a pyenv shim costs ~0.15 s a call)
  local exe
  exe=$("$PYTHON" -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null) || exe=""
  [[ -n "$exe" ]] || die "$PYTHON must be Python >= 3.11 (set PYTHON=...)"
  PYTHON=$exe
}

ensure_deb() {  # package: install a missing Debian package when root, else explain
  local pkg=$1
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's $pkg (~20 s, once)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; } \
      || die "apt-get install $pkg failed"
    return 0
  fi
  die "Debian package $pkg is needed (run as root to have it installed, or: sudo apt-get install $pkg)"
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "building the $1 image needs root ($2); run: sudo bash hack/build-images.sh $1"
}

unmount_under() {  # dir: undo mounts a failed debootstrap may have left inside
  local dir m
  dir=$(realpath -m "$1")
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

remove_tree() {
  [[ -e "$1" ]] || return 0
  unmount_under "$1"
  rm -rf --one-file-system "$1"
}

# Cache stamps: an image is fresh when its archive exists and was built from the same key.
stamp_file() { echo "$CACHE/images/stamps/$1"; }
fresh() {  # name key archive
  local stamp; stamp=$(stamp_file "$1")
  [[ -f "$3" && -f "$stamp" && "$(<"$stamp")" == "$2 $(stat -c %s "$3")" ]]
}
stamp() {  # name key archive
  mkdir -p "$CACHE/images/stamps"
  echo "$2 $(stat -c %s "$3")" >"$(stamp_file "$1").tmp"
  mv "$(stamp_file "$1").tmp" "$(stamp_file "$1")"
}

BLOBS="$CACHE/images/blobs"

prune_siblings() {  # dir: a newer cached tree replaced older ones (other keys) beside it; drop those
  local d
  for d in "$(dirname "$1")"/*; do
    [[ "$d" == "$1" || ! -d "$d" ]] && continue
    log "removing the outdated cache $d"; remove_tree "$d"
  done
}

prune_blobs() {  # keep only the blobs a cached layer.json names; per-image layers live on in their archives
  local keep d f
  keep=$(cat "$CACHE"/rootfs/*/layer.json "$CACHE"/python-deps/*/layer.json "$CACHE"/airflow-layer/*/layer.json \
    2>/dev/null \
    | sed -n 's/.*"digest": "sha256:\([0-9a-f]*\)".*/\1/p' || true)
  for f in "$BLOBS"/sha256/*; do
    [[ -f "$f" ]] || continue
    d=$(basename "$f")
    [[ "$keep" == *"$d"* ]] || rm -f "$f"
  done
}
RECIPE=""   # hash of this script and oci.py: any change to how images are made rebuilds them
RESULTS=()

add_result() { RESULTS+=("$1" "$2" "$3"); }

image_from_layers() {  # ref archive config-json layer.json...
  local ref=$1 archive=$2 config=$3; shift 3
  local args=() l
  for l in "$@"; do args+=(--layer "$l"); done
  oci image --ref "$ref" --out "$archive" --config "$config" "${args[@]}" >/dev/null
}

# ------------------------------------------------------------------------------------------------ pause
PAUSE_GO='// Command pause holds a pod sandbox: it waits for SIGTERM or SIGINT and exits 0, reaping zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	child := make(chan os.Signal, 16)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-child:
			for {
				var ws syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
'

build_pause() {
  local src_hash bin_dir bin archive key t0
  src_hash=$(printf '%s' "$PAUSE_GO" | sha | short)
  bin_dir="$CACHE/pause/3.10-$src_hash"; bin="$bin_dir/pause"
  archive="$CACHE/images/pause-3.10.oci.tar"
  if [[ ! -x "$bin" ]]; then
    need_go "the pause binary"; go_env
    t0=$(now)
    log "go build pause (~10 s, once; cached in $bin_dir)"
    local work="$CACHE/work/pause"
    rm -rf "$work" "$bin_dir.tmp"; mkdir -p "$work" "$bin_dir.tmp"
    local gover; gover=$(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1.0/')
    printf 'module leoflow.local/pause\n\ngo %s\n' "$gover" >"$work/go.mod"
    printf '%s' "$PAUSE_GO" >"$work/main.go"
    (cd "$work" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin_dir.tmp/pause" .) >&2 \
      || die "go build pause failed"
    rm -rf "$bin_dir"; mv "$bin_dir.tmp" "$bin_dir"; rm -rf "$work"
    log "pause binary built in $(since "$t0")"
  fi
  key="pause $RECIPE $(fileid "$bin")"
  if ! fresh pause "$key" "$archive"; then
    t0=$(now)
    log "packing $PAUSE_REF (~1 s)"
    # It must exit 0 on SIGTERM (a sandbox that fails to stop blocks pod teardown).
    "$bin" & local pid=$!
    sleep 0.2; kill -TERM "$pid"; wait "$pid" || die "the pause binary did not exit 0 on SIGTERM"
    local work="$CACHE/work/pause-image"
    rm -rf "$work"; mkdir -p "$work/root"
    install -m 0755 "$bin" "$work/root/pause"
    oci layer --root "$work/root" --blobs "$BLOBS" --created-by "pause: static Go binary" --out "$work/layer.json"
    image_from_layers "$PAUSE_REF" "$archive" \
      '{"Entrypoint": ["/pause"], "User": "65535:65535", "Env": ["PATH='"$STD_PATH"'"]}' "$work/layer.json"
    stamp pause "$key" "$archive"; rm -rf "$work"
    log "$PAUSE_REF: $(du -h "$archive" | cut -f1) archive in $(since "$t0")"
  fi
  add_result pause "$archive" "$PAUSE_REF"
}

# ------------------------------------------------------------------------------------------------ task
build_task() {
  ensure_deb busybox-static
  local bb version archive key t0
  bb=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -1)
  [[ -x "$bb" ]] || die "busybox-static is installed but its /bin/busybox is missing"
  version=$(dpkg-query -W -f='${Version}' busybox-static)
  archive="$CACHE/images/task-busybox.oci.tar"
  key="task $RECIPE $version $(fileid "$bb")"
  if ! fresh task "$key" "$archive"; then
    t0=$(now)
    log "packing $TASK_REF from busybox-static $version (~2 s)"
    local work="$CACHE/work/task-image" root applet path
    rm -rf "$work"; mkdir -p "$work/root"
    root="$work/root"
    install -D -m 0755 "$bb" "$root/bin/busybox"
    while read -r path; do
      [[ -n "$path" && "$path" != bin/busybox ]] || continue
      mkdir -p "$root/$(dirname "$path")"
      ln -sfn /bin/busybox "$root/$path"
    done < <("$bb" --list-full)
    local found d
    for applet in $TASK_APPLETS; do
      found=""
      for d in bin sbin usr/bin usr/sbin; do if [[ -L "$root/$d/$applet" ]]; then found=1; fi; done
      [[ -n "$found" ]] || die "busybox-static $version lacks the applet $applet"
    done
    mkdir -p "$root/etc" "$root/root" "$root/tmp"
    chmod 1777 "$root/tmp"; chmod 0700 "$root/root"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    if [[ $(id -u) -eq 0 ]]; then   # what the provisioner's helper pods and the tests run
      env -i PATH="$STD_PATH" chroot "$root" sh -c \
        'mkdir -p /tmp/t && echo ok | md5sum >/tmp/t/x && chmod 0777 /tmp/t && rm -rf /tmp/t && [ ! -e /tmp/t ]' \
        || die "the task image's shell does not work (chroot $root sh -c ...)"
    fi
    oci layer --root "$root" --blobs "$BLOBS" --created-by "busybox-static $version" --out "$work/layer.json"
    image_from_layers "$TASK_REF" "$archive" '{"Cmd": ["sh"], "Env": ["PATH='"$STD_PATH"'"]}' "$work/layer.json"
    stamp task "$key" "$archive"; rm -rf "$work"
    log "$TASK_REF: $(du -h "$archive" | cut -f1) archive in $(since "$t0")"
  fi
  add_result task "$archive" "$TASK_REF"
}

# ------------------------------------------------------------------------------------------------ provisioner
build_provisioner() {
  local bin_dir="$CACHE/local-path-provisioner/$PROVISIONER_VERSION" archive key t0
  local bin="$bin_dir/local-path-provisioner"
  archive="$CACHE/images/local-path-provisioner-$PROVISIONER_VERSION.oci.tar"
  if [[ ! -x "$bin" ]]; then
    need_go "local-path-provisioner"; go_env
    t0=$(now)
    log "go install github.com/rancher/local-path-provisioner@$PROVISIONER_VERSION (~1.5 min, once; cached in $bin_dir)"
    local work="$CACHE/work/local-path-provisioner"
    rm -rf "$work" "$bin_dir.tmp"; mkdir -p "$work" "$bin_dir.tmp"
    # The checksum database lacks this version; the module proxy serves it.
    (cd "$work" && GONOSUMDB=github.com/rancher/local-path-provisioner GOBIN="$bin_dir.tmp" \
      go install -trimpath -ldflags "-s -w -X main.VERSION=$PROVISIONER_VERSION" \
      "github.com/rancher/local-path-provisioner@$PROVISIONER_VERSION") >&2 \
      || die "go install local-path-provisioner@$PROVISIONER_VERSION failed"
    rm -rf "$bin_dir"; mv "$bin_dir.tmp" "$bin_dir"; rm -rf "$work"
    log "local-path-provisioner built in $(since "$t0")"
  fi
  key="provisioner $RECIPE $(fileid "$bin")"
  if ! fresh provisioner "$key" "$archive"; then
    t0=$(now)
    log "packing $PROVISIONER_REF (~2 s)"
    "$bin" --help >/dev/null 2>&1 || die "$bin --help failed"
    local work="$CACHE/work/provisioner-image"
    rm -rf "$work"; mkdir -p "$work/root/tmp"
    chmod 1777 "$work/root/tmp"
    install -D -m 0755 "$bin" "$work/root/usr/bin/local-path-provisioner"
    oci layer --root "$work/root" --blobs "$BLOBS" --created-by "local-path-provisioner $PROVISIONER_VERSION (go install)" \
      --out "$work/layer.json"
    image_from_layers "$PROVISIONER_REF" "$archive" \
      '{"Entrypoint": ["local-path-provisioner"], "Env": ["PATH='"$STD_PATH"'"]}' "$work/layer.json"
    stamp provisioner "$key" "$archive"; rm -rf "$work"
    log "$PROVISIONER_REF: $(du -h "$archive" | cut -f1) archive in $(since "$t0")"
  fi
  add_result provisioner "$archive" "$PROVISIONER_REF"
}

# ------------------------------------------------------------------------------------------------ product
BASE_KEY=$(printf '%s|%s|%s|%s' "$DEBIAN_SUITE" minbase "$BASE_PACKAGES" "$BASE_RECIPE" | sha | short)
BASE_DIR="$CACHE/rootfs/$DEBIAN_SUITE-minbase-$BASE_KEY"   # rootfs/ (the tree) and layer.json (its blob)

build_base() {
  [[ -f "$BASE_DIR/layer.json" && -d "$BASE_DIR/rootfs/usr" ]] && return 0
  ensure_deb debootstrap
  local t0 tmp="$BASE_DIR.tmp" root
  t0=$(now)
  remove_tree "$tmp"; mkdir -p "$tmp"
  root="$tmp/rootfs"
  log "debootstrap $DEBIAN_SUITE minbase + $BASE_PACKAGES (~2.5 min, once; cached in $BASE_DIR)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" \
    >"$tmp/debootstrap.log" 2>&1 || { unmount_under "$tmp"; tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed (log: $tmp/debootstrap.log)"; }
  unmount_under "$tmp"
  log "trimming the rootfs (docs, man pages, locales, apt lists, logs, host files) and compiling the stdlib (~20 s)"
  (
    cd "$root"
    rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian usr/share/linda \
      var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old var/cache/ldconfig/aux-cache
    find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    find var/log -type f -delete
    # Host files debootstrap copies in; the runtime provides its own.
    : >etc/hostname; : >etc/resolv.conf
    sed -i -E "s/^([^:]*:[^:]*:)[0-9]*:/\\1$SHADOW_LASTCHG:/" etc/shadow
    find . -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
  )
  # Debian's .pyc files check the source's mtime, which the layer sets to 0: compile hash-checked ones instead
  # (stable, still valid in the image; without them every start recompiles the stdlib).
  env -i PATH="$STD_PATH" PYTHONHASHSEED=0 chroot "$root" python3 -m compileall -q -j 0 \
    --invalidation-mode checked-hash /usr/lib/python3.11 /usr/lib/python3/dist-packages >/dev/null \
    || die "compiling the stdlib inside the rootfs failed"
  log "packing the base layer (~15 s)"
  oci layer --root "$root" --blobs "$BLOBS" --preserve-owner \
    --created-by "debootstrap --variant=minbase --include=$BASE_PACKAGES $DEBIAN_SUITE (trimmed)" --out "$tmp/layer.json"
  remove_tree "$BASE_DIR"; mv "$tmp" "$BASE_DIR"
  prune_siblings "$BASE_DIR"
  log "base rootfs ready in $(since "$t0"): $(du -sh "$BASE_DIR/rootfs" | cut -f1) on disk"
}

pip_platforms() {
  local m args=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  for m in $(seq 17 36); do args+=(--platform "manylinux_2_${m}_x86_64"); done   # bookworm: glibc 2.36
  echo "${args[@]}"
}

clean_site() {  # site dir: drop host-specific or generated files pip leaves
  local site=$1
  rm -rf "${site:?}/bin"
  find "$site" -name direct_url.json -path '*.dist-info/*' -delete
  find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
  # RECORD lines for the scripts just removed (../../bin/...) would name files that are not there.
  local record
  for record in "$site"/*.dist-info/RECORD; do
    [[ -f "$record" ]] && sed -i '/^\.\.\//d; /__pycache__/d; /dist-info\/direct_url\.json,/d' "$record"
  done
  return 0
}

merge_tree() {  # dest layer-root...: the layers stacked, as hard links (0.4 s instead of 7 s of copying).
  # Safe for the cached trees: files replaced by a higher layer are unlinked first (--remove-destination),
  # compileall only adds new .pyc files (fresh inodes, in folders of the merged tree), and the checks run
  # as uid 10001, which cannot write the root-owned files.
  local dest=$1; shift
  cp -al "$1" "$dest"; shift
  local layer
  for layer in "$@"; do cp -al --remove-destination "$layer/." "$dest/"; done
}

# Not precompiled: the kubernetes client's asyncio copy (27 MB of .pyc; this project uses the sync client) and tests.
COMPILE_SKIP='/kubernetes/aio/|/tests?/'

compile_into() {  # merged-root layer-root path...: compile .py under the paths in the merged tree, copy the .pyc back
  local merged=$1 layer=$2; shift 2
  env -i PATH="$STD_PATH" PYTHONHASHSEED=0 chroot "$merged" python3 -m compileall -q -j 0 -x "$COMPILE_SKIP" \
    --invalidation-mode checked-hash "${@/#//}" >/dev/null || die "compileall in $merged failed"
  (cd "$merged" && find "$@" -path '*/__pycache__/*.pyc' -print0 | tar --null -T - -cf -) | tar -xf - -C "$layer"
}

deps_key() {
  { cat "$REPO/requirements/image.lock"; echo "$BASE_KEY $DEPS_RECIPE $PY_SITE $(pip_platforms)"; } | sha | short
}

DEPS_DIR=""
build_deps() {  # the locked dependencies + the leoflow user, on top of the base
  local lock="$REPO/requirements/image.lock"
  DEPS_DIR="$CACHE/python-deps/$(deps_key)"
  [[ -f "$DEPS_DIR/layer.json" ]] && return 0
  local t0 tmp="$DEPS_DIR.tmp" root merged
  t0=$(now)
  rm -rf "$tmp"; mkdir -p "$tmp"
  root="$tmp/root"; mkdir -p "$root/$PY_SITE"
  log "pip install the locked dependencies (manylinux wheels for CPython 3.11) (~30 s, once per lock; cached in $DEPS_DIR)"
  # shellcheck disable=SC2046
  "$PYTHON" -m pip install -q --no-deps --no-compile --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none $(pip_platforms) --platform any \
    --target "$root/$PY_SITE" -r "$lock" >&2 || die "pip install -r requirements/image.lock failed"
  clean_site "$root/$PY_SITE"
  # Console scripts of the dependencies (gunicorn, alembic, flask, ...), like pip would write them.
  oci launchers --site "$root/$PY_SITE" --bin "$root/usr/local/bin" >/dev/null
  # The non-root user the image runs as (the Dockerfile's `useradd --uid 10001`).
  mkdir -p "$root/etc"
  cp -p "$BASE_DIR/rootfs/etc/"{passwd,group,shadow,gshadow} "$root/etc/"
  echo "leoflow:x:10001:10001:leoflow-staging:/nonexistent:/usr/sbin/nologin" >>"$root/etc/passwd"
  echo "leoflow:x:10001:" >>"$root/etc/group"
  echo "leoflow:!:$SHADOW_LASTCHG::::::" >>"$root/etc/shadow"
  echo "leoflow:!::" >>"$root/etc/gshadow"
  log "compiling the dependencies to .pyc inside the rootfs (~20 s)"
  merged="$tmp/merged"
  merge_tree "$merged" "$BASE_DIR/rootfs" "$root"
  compile_into "$merged" "$root" "$PY_SITE"
  rm -rf "$merged"
  log "packing the dependencies layer (~10 s)"
  # Owners kept: all root (pip ran as root) but /etc/shadow and /etc/gshadow (group shadow, as in the base).
  oci layer --root "$root" --blobs "$BLOBS" --preserve-owner \
    --created-by "pip install --no-deps -r requirements/image.lock" --out "$tmp/layer.json"
  rm -rf "$DEPS_DIR"; mv "$tmp" "$DEPS_DIR"
  prune_siblings "$DEPS_DIR"
  log "dependencies layer ready in $(since "$t0")"
}

build_product() {
  local tag ref archive key t0
  [[ -f "$REPO/requirements/image.lock" ]] || die "requirements/image.lock is missing (bash hack/build-images.sh --lock)"
  tag=$(oci tag --root "$REPO")
  ref="$PRODUCT_REPO:$tag"
  archive="$REPO/dist/leoflow-staging-$tag.oci.tar"
  key="product $RECIPE $tag $BASE_KEY $(deps_key)"
  if fresh product "$key" "$archive"; then
    add_result product "$archive" "$ref"; return 0
  fi
  need_root product "debootstrap and chroot"
  t0=$(now)
  build_base
  build_deps
  log "building the project layer of $ref (wheel, launcher, .pyc, checks) (~10 s)"
  local work="$CACHE/work/product" src root merged
  rm -rf "$work"; mkdir -p "$work"
  src="$work/src"; root="$work/root"; merged="$work/merged"
  # Build the wheel from exactly the hashed inputs (a copy), so the tag names what is inside.
  mkdir -p "$src"
  (cd "$REPO" && cp -a --parents pyproject.toml README.md requirements/image.lock \
    leoflow_staging webhook gc_job shared certs "$src/")
  find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
  "$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$work/wheel" "$src" >&2 \
    || die "pip wheel of the project failed"
  mkdir -p "$root/$PY_SITE"
  "$PYTHON" -m pip install -q --no-deps --no-compile --target "$root/$PY_SITE" \
    "$work"/wheel/*.whl >&2 || die "pip install of the project wheel failed"
  clean_site "$root/$PY_SITE"
  oci launchers --site "$root/$PY_SITE" --bin "$root/usr/local/bin" --only leoflow-staging >/dev/null
  merge_tree "$merged" "$BASE_DIR/rootfs" "$DEPS_DIR/root" "$root"
  local pkgs=() p
  for p in "$root/$PY_SITE"/*; do [[ -d "$p" && "$p" != *.dist-info ]] && pkgs+=("$PY_SITE/$(basename "$p")"); done
  compile_into "$merged" "$root" "${pkgs[@]}"
  # The image must start: run it as the image's user inside the merged rootfs.
  local run=(env -i PATH="$STD_PATH" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp HOME=/nonexistent
             chroot --userspec=10001:10001 "$merged")
  "${run[@]}" leoflow-staging --help >/dev/null || die "chroot $merged leoflow-staging --help failed"
  "${run[@]}" python3 -c 'import psycopg2, cryptography, flask, gunicorn, kubernetes, sqlalchemy, alembic, prometheus_client, jsonpatch' \
    || die "the locked dependencies do not import inside the rootfs"
  "${run[@]}" python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || die "the image's python3 is not 3.11"
  log "checked: leoflow-staging --help and the dependencies' imports work as uid 10001 in the rootfs"
  oci layer --root "$root" --blobs "$BLOBS" --created-by "leoflow-staging $tag (pip install --no-deps)" \
    --out "$work/layer.json"
  local config
  config=$(cat <<JSON
{"Entrypoint": ["leoflow-staging"], "Cmd": ["--help"], "User": "10001:10001", "WorkingDir": "/",
 "Env": ["PATH=$STD_PATH", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "TMPDIR=/tmp"],
 "ExposedPorts": ["8443/tcp"],
 "Labels": {"org.opencontainers.image.title": "leoflow-staging", "org.opencontainers.image.version": "$tag"}}
JSON
)
  image_from_layers "$ref" "$archive" "$config" "$BASE_DIR/layer.json" "$DEPS_DIR/layer.json" "$work/layer.json"
  stamp product "$key" "$archive"
  rm -rf "$work"
  add_result product "$archive" "$ref"
  local old
  for old in "$REPO"/dist/leoflow-staging-*.oci.tar; do
    [[ "$old" == "$archive" || ! -f "$old" ]] && continue
    log "removing the older $(basename "$old")"; rm -f "$old"
  done
  log "$ref: $(du -h "$archive" | cut -f1) archive in $(since "$t0") -> $archive"
}

# ------------------------------------------------------------------------------------------------ airflow
# A KubernetesExecutor worker: the product's base rootfs + stock Apache Airflow 3 and the cncf-kubernetes
# provider at the pins of requirements/airflow.lock (the same as the tests' Airflow venv), and a `python`
# (Airflow 3's executor runs `python -m airflow.sdk.execution_time.execute_workload` in the pod).
build_airflow() {
  local lock="$REPO/requirements/airflow.lock" key version ref archive layer_dir t0
  key=$({ cat "$lock"; echo "$BASE_KEY $DEPS_RECIPE $PY_SITE $(pip_platforms)"; } | sha | short)
  version=$(sed -n 's/^apache-airflow==//p' "$lock")
  ref="leoflow.local/airflow:$version-$key"
  archive="$CACHE/images/airflow-$version-$key.oci.tar"
  layer_dir="$CACHE/airflow-layer/$key"
  if fresh airflow "airflow $RECIPE $key" "$archive"; then
    add_result airflow "$archive" "$ref"; return 0
  fi
  need_root airflow "debootstrap and chroot"
  t0=$(now)
  build_base
  if [[ ! -f "$layer_dir/layer.json" ]]; then
    local tmp="$layer_dir.tmp" root merged
    rm -rf "$tmp"; mkdir -p "$tmp"
    root="$tmp/root"; mkdir -p "$root/$PY_SITE" "$root/usr/local/bin"
    log "pip install Apache Airflow $version (requirements/airflow.lock, ~300 MB of wheels) (~1-2 min, once per lock; cached in $layer_dir)"
    # shellcheck disable=SC2046
    "$PYTHON" -m pip install -q --no-deps --no-compile --only-binary=:all: \
      --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none $(pip_platforms) --platform any \
      --target "$root/$PY_SITE" -r "$lock" >&2 || die "pip install -r requirements/airflow.lock failed"
    clean_site "$root/$PY_SITE"
    oci launchers --site "$root/$PY_SITE" --bin "$root/usr/local/bin" >/dev/null
    ln -s /usr/bin/python3 "$root/usr/local/bin/python"
    log "compiling Airflow to .pyc inside the rootfs (~1-2 min)"
    merged="$tmp/merged"
    merge_tree "$merged" "$BASE_DIR/rootfs" "$root"
    local pkgs=() p
    for p in "$root/$PY_SITE"/*; do [[ -d "$p" && "$p" != *.dist-info ]] && pkgs+=("$PY_SITE/$(basename "$p")"); done
    compile_into "$merged" "$root" "${pkgs[@]}"
    env -i PATH="$STD_PATH" HOME=/tmp AIRFLOW_HOME=/tmp/airflow chroot "$merged" python -c \
      'import airflow.providers.cncf.kubernetes, airflow.sdk.execution_time.execute_workload' >/dev/null \
      || die "Airflow does not import inside the rootfs"
    rm -rf "$merged"
    log "packing the Airflow layer (~30 s)"
    oci layer --root "$root" --blobs "$BLOBS" --created-by "pip install --no-deps -r requirements/airflow.lock" \
      --out "$tmp/layer.json"
    rm -rf "$layer_dir"; mv "$tmp" "$layer_dir"
    prune_siblings "$layer_dir"
  fi
  local config
  config=$(cat <<JSON
{"Cmd": ["python", "-m", "airflow", "version"], "WorkingDir": "/",
 "Env": ["PATH=$STD_PATH", "PYTHONUNBUFFERED=1", "TMPDIR=/tmp", "HOME=/tmp"],
 "Labels": {"org.opencontainers.image.title": "apache-airflow worker", "org.opencontainers.image.version": "$version"}}
JSON
)
  local old
  for old in "$CACHE"/images/airflow-*.oci.tar; do
    [[ "$old" == "$archive" || ! -f "$old" ]] || rm -f "$old"
  done
  image_from_layers "$ref" "$archive" "$config" "$BASE_DIR/layer.json" "$layer_dir/layer.json"
  stamp airflow "airflow $RECIPE $key" "$archive"
  add_result airflow "$archive" "$ref"
  log "$ref: $(du -h "$archive" | cut -f1) archive in $(since "$t0")"
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
    echo "# pyproject.toml, resolved with Python 3.11. hack/build-images.sh and the Dockerfile install exactly"
    echo "# these (then the project itself with --no-deps), so the image does not drift with PyPI."
    echo "# Regenerate after changing those dependencies: bash hack/build-images.sh --lock"
    echo
    "$venv/bin/pip" freeze
  } >"$REPO/requirements/image.lock.tmp"
  mv "$REPO/requirements/image.lock.tmp" "$REPO/requirements/image.lock"
  log "wrote requirements/image.lock ($(grep -c '==' "$REPO/requirements/image.lock") pins)"
}

# ------------------------------------------------------------------------------------------------ main
main() {
  if [[ "${1:-}" == "--lock" ]]; then write_lock; return; fi
  need_python
  local names=() n
  for n in "${@:-all}"; do
    case "$n" in
      all) names+=(pause task provisioner product) ;;
      pause|task|provisioner|product|airflow) names+=("$n") ;;
      -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; return 0 ;;
      *) die "unknown image $n (all, product, task, pause, provisioner, airflow)" ;;
    esac
  done
  mkdir -p "$CACHE/images" "$BLOBS"
  # One build at a time per cache (the work dirs and the blob store are shared).
  exec 9>"$CACHE/images/.lock"
  if ! flock -n 9; then
    log "another build-images run holds $CACHE/images/.lock; waiting for it"
    flock 9
  fi
  RECIPE=$(sha "$0" "$OCI_PY" | sha | short)
  local t0 seen=" "
  t0=$(now)
  for n in "${names[@]}"; do
    [[ "$seen" == *" $n "* ]] && continue
    seen+="$n "
    "build_$n"
  done
  prune_blobs
  oci summary "${RESULTS[@]}"
  log "done in $(since "$t0")"
}

main "$@"
