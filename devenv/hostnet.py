"""The host side of the dev node's network: nothing may leave this machine, and teardown undoes it all.

The sandbox routes private ranges out to a gateway (a foreign proxy answers there), so the
service and pod CIDRs get local routes *before* anything can send to them. The pod block is a
blackhole (the node's own /24 is on the bridge). The service CIDR is routed onto the pod bridge,
which this module creates up front: a blackhole would not do for it, because a host process's
connect() looks the route up before kube-proxy's OUTPUT DNAT runs and fails at once with EINVAL
(the apiserver calling a webhook Service saw exactly that). On the bridge, a served ClusterIP is
DNATed to its pod, and one nobody serves gets "no route to host" from ARP, on this machine.
Forwarded pod traffic may only reach other pods: a guard chain in FORWARD drops the rest (pods
reach this host's own addresses through INPUT).

Teardown removes what the kubelet, kube-proxy, the CNI bridge plugin and this module added:
iptables chains (``KUBE-*``, ``CNI-*``, ``LEOFLOW-*`` and the rules jumping to them), routes,
the bridge, and the sysctls they changed (restored from the snapshot taken at start).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

GUARD_CHAIN = "LEOFLOW-GUARD"
# Chains created by the components on the node; any rule naming one of these goes at teardown.
_OWNED_PREFIXES = ("KUBE-", "CNI-", "LEOFLOW-")
# Host settings the kubelet (kernel defaults), the bridge plugin (ip_forward) and kube-proxy may change.
SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables",
)


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, input=stdin)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = (Path("/proc/sys") / key).read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with contextlib.suppress(OSError):
            path = Path("/proc/sys") / key
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


def strip_owned_rules(dump: str) -> str:
    """An ``iptables-save`` dump without the chains and rules the node's components own (pure)."""
    kept = [line for line in dump.splitlines() if not any(p in line for p in _OWNED_PREFIXES)]
    return "\n".join(kept) + "\n"


def guard_rules(*, pod_cidr: str, bridge: str) -> list[list[str]]:
    """The FORWARD guard: pods may talk to pods; nothing from a pod is forwarded anywhere else (pure)."""
    return [
        ["-A", GUARD_CHAIN, "-s", pod_cidr, "-d", pod_cidr, "-j", "RETURN"],
        ["-A", GUARD_CHAIN, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-d", pod_cidr, "-j", "RETURN"],
        ["-A", GUARD_CHAIN, "-i", bridge, "-j", "DROP"],
        ["-A", GUARD_CHAIN, "-s", pod_cidr, "-j", "DROP"],
    ]


@dataclass(frozen=True)
class HostNetwork:
    """Blackholes, the forward guard and the undo of everything the node changes on the host."""

    service_cidr: str
    pod_cidr_block: str  # e.g. 10.244.0.0/16: blackholed beyond the node's own /24
    pod_cidr: str  # the node's range, on the bridge
    bridge: str
    state_file: Path

    def setup(self) -> None:
        """Before any component starts: remember the sysctls, blackhole the ranges, install the guard."""
        if not self.state_file.exists():
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps({"sysctls": read_sysctls()}))
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "link", "set", self.bridge, "up")
        _run("ip", "route", "replace", self.service_cidr, "dev", self.bridge)
        _run("ip", "route", "replace", "blackhole", self.pod_cidr_block)
        _run("iptables", "-N", GUARD_CHAIN, check=False)
        _run("iptables", "-F", GUARD_CHAIN)
        for rule in guard_rules(pod_cidr=self.pod_cidr, bridge=self.bridge):
            _run("iptables", *rule)
        if _run("iptables", "-C", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode != 0:
            _run("iptables", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)

    def teardown(self) -> list[str]:
        """Undo every host change; returns what could not be undone (empty when clean)."""
        problems: list[str] = []
        for tool in ("iptables", "ip6tables"):
            dump = _run(f"{tool}-save", check=False)
            if dump.returncode != 0:
                continue
            if any(p in dump.stdout for p in _OWNED_PREFIXES):
                restored = _run(f"{tool}-restore", stdin=strip_owned_rules(dump.stdout), check=False)
                if restored.returncode != 0:
                    problems.append(f"{tool}-restore: {restored.stderr.strip()}")
        _run("ip", "route", "del", "blackhole", self.pod_cidr_block, check=False)
        if Path(f"/sys/class/net/{self.bridge}").exists():
            _run("ip", "link", "del", self.bridge, check=False)
        if self.state_file.exists():
            saved = json.loads(self.state_file.read_text())
            restore_sysctls(saved.get("sysctls", {}))
            self.state_file.unlink()
        return problems
