#!/usr/bin/env bash
# Make sure what the image builds need from Debian is installed: buildah (builds the Dockerfile and the
# small images' Containerfiles, no Docker engine, no registry), skopeo (copies an OCI archive to a registry),
# debootstrap (the registry-free Python base) and busybox-static (the task image). apt keeps the downloaded
# .deb files in ~/.cache/leoflow-staging/apt/, so a reinstall downloads nothing; when everything is
# installed this does nothing.
#
# --no-install-recommends on purpose: buildah recommends netavark/slirp4netns (its own bridge network). The
# builds here always run with `--isolation chroot --network host`; without netavark a mistaken build with
# a private network fails instead of leaving a podman0 bridge, NETAVARK-* iptables chains and ip_forward
# changes on the host.
set -euo pipefail
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v skopeo >/dev/null || need+=(skopeo)
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -x /bin/busybox ]] || need+=(busybox-static)
(( ${#need[@]} )) || exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "ensure-buildah: missing ${need[*]}; install them (Debian: apt-get install --no-install-recommends ${need[*]})" >&2
  exit 1
fi
echo "ensure-buildah: installing ${need[*]} from Debian's packages (~20 s, once)" >&2
cache="${LEOFLOW_DEV_CACHE:-$HOME/.cache/leoflow-staging}/apt"
mkdir -p "$cache/partial"
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o Dir::Cache::archives="$cache" \
    -o APT::Sandbox::User=root "${need[@]}" >/dev/null
}
install 2>/dev/null || { apt-get update -qq && install; }
command -v buildah >/dev/null && command -v skopeo >/dev/null
