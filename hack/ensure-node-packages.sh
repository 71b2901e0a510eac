#!/usr/bin/env bash
# Make sure what a real dev node needs from Debian is installed: containerd (with ctr), runc, the CNI
# plugins, iptables and iproute2 (and debootstrap and busybox-static, which the image builds use).
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge || -x /opt/cni/bin/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -x /bin/busybox ]] || need+=(busybox-static)
(( ${#need[@]} )) || exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "ensure-node-packages: installing ${need[*]} from Debian's packages (~30 s)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  exit 0
fi
echo "ensure-node-packages: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
exit 1
