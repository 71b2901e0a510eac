"""A real node beside the dev control plane: containerd, runc, CNI bridge, kubelet, kube-scheduler, kube-proxy.

Facts this follows (measured on these machines, see docs/development.md):
- runc cannot write ``oom_score_adj`` here (no CAP_SYS_RESOURCE): containerd's CRI runs with
  ``restrict_oom_score_adj = true``.
- The host is cgroup v1: kubelet ``failCgroupV1: false`` with the cgroupfs driver.
- Images are imported from OCI archives (no registry): image GC is off, pods use ``imagePullPolicy: Never``.
- Every path the node writes is under ``workdir``; what it changes on the host is undone by ``stop``
  (see ``hostnet``) and by unmounting and removing what lies under ``workdir`` and the kubelet's cgroups.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, config

from devenv.controlplane import SERVICE_CIDR, ControlPlane
from devenv.hostnet import HostNetwork
from devenv.processes import ManagedProcess, StartupError, free_port, kill_group, log_tail

NODE_NAME = "leoflow-node"
POD_CIDR = "10.244.0.0/24"
POD_CIDR_BLOCK = "10.244.0.0/16"
BRIDGE = "leoflow0"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
HOST_PACKAGES = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables"}


def primary_ip() -> str:
    """The address of the interface that holds the default route (the kubelet refuses loopback)."""
    # A route lookup only: nothing is sent.
    out = subprocess.run(["ip", "-4", "-json", "route", "get", "198.51.100.1"], capture_output=True, text=True,
                         check=False)
    with contextlib.suppress(ValueError, IndexError, KeyError):
        src: str = json.loads(out.stdout)[0]["prefsrc"]
        return src
    out = subprocess.run(["ip", "-4", "-json", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=True)
    for link in json.loads(out.stdout):
        for addr in link.get("addr_info", []):
            local: str = addr["local"]
            return local
    raise RuntimeError("no global IPv4 address on this host: a node needs one (the kubelet refuses loopback)")


def cni_bin_dir() -> str:
    for cand in CNI_BIN_DIRS:
        if (Path(cand) / "bridge").exists() and (Path(cand) / "host-local").exists():
            return cand
    raise FileNotFoundError("CNI plugins (bridge, host-local) not found: run hack/ensure-node-packages.sh")


def containerd_config(*, root: Path, state: Path, socket: Path, sandbox_image: str, cni_conf_dir: Path,
                      cni_bin: str) -> str:
    """containerd 1.6 config (version 2) for the CRI on this host (pure)."""
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf_dir}"
"""


def cni_config(*, ipam_dir: Path) -> dict[str, object]:
    """A bridge network for the node's pod CIDR; no masquerade (pods never leave this host) (pure)."""
    return {
        "cniVersion": "0.4.0",
        "name": "leoflow",
        "plugins": [
            {
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(*, socket: Path, node_ip: str, port: int, healthz_port: int, ca_file: Path, resolv_conf: Path,
                   pod_logs: Path) -> dict[str, object]:
    """KubeletConfiguration for a cgroup-v1 host whose images are imported, not pulled (pure)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podCIDR": POD_CIDR,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        # Imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "maxPods": 250,
        "shutdownGracePeriod": "0s",
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(*, kubeconfig: Path, node_ip: str, healthz_port: int, metrics_port: int) -> dict[str, object]:
    """iptables mode without touching host sysctls (conntrack tuning off, no localhost NodePorts) (pure)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR_BLOCK,
        "hostnameOverride": NODE_NAME,
        "bindAddress": node_ip,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "oomScoreAdj": 0,
        "nodePortAddresses": [f"{node_ip}/32"],
    }


@dataclass
class Node:
    """One node: containerd + kubelet + kube-scheduler + kube-proxy, registered with ``plane``."""

    plane: ControlPlane
    assets: Path
    workdir: Path
    sandbox_image: str
    die_with_parent: bool = True
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"


    def log_paths(self) -> list[Path]:
        return [p.log_path for p in self.processes]

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.popen is not None]

    def _binary(self, name: str) -> str:
        path = self.assets / name
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{name} not found in {self.assets} (run hack/build-control-plane.sh --node)")
        return str(path)

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", self.die_with_parent)
        self.processes.append(proc)
        proc.start()
        return proc

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, check=False, timeout=timeout)

    def start_runtime(self, *, timeout: float = 60.0) -> None:
        """Host guard first, then containerd (images can be imported once this returns)."""
        missing = [b for b in HOST_PACKAGES if shutil.which(b) is None]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not found: run hack/ensure-node-packages.sh")
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise RuntimeError(f"another dev node runs on this host (the bridge {BRIDGE} exists), or one crashed: "
                               "stop it with `make dev-down` (one node per host: kubelet and iptables are host-wide)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        host_network(self.workdir).setup()
        runtime = self.workdir / "containerd"
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-leoflow.conflist").write_text(json.dumps(cni_config(ipam_dir=self.workdir / "cni" / "ipam")))
        runtime.mkdir(parents=True, exist_ok=True)
        conf = runtime / "config.toml"
        conf.write_text(containerd_config(root=runtime / "root", state=runtime / "state", socket=self.socket,
                                          sandbox_image=self.sandbox_image, cni_conf_dir=cni_conf,
                                          cni_bin=cni_bin_dir()))
        containerd = self._spawn("containerd", ["containerd", "--config", str(conf), "--log-level", "warn"])
        containerd.wait_healthy(lambda: self.ctr("version", timeout=5).returncode == 0, timeout=timeout)

    def import_image(self, archive: Path, ref: str) -> None:
        """Load an OCI archive into the node's image store (the kubelet then finds ``ref``)."""
        out = self.ctr("images", "import", "--all-platforms", str(archive))
        if out.returncode != 0:
            raise RuntimeError(f"importing {archive} into the node failed: {out.stderr.strip()}")
        listed = self.ctr("images", "list", "--quiet")
        if ref not in listed.stdout.split():
            raise RuntimeError(f"{archive} imported but {ref} is not in the node's image list; "
                               f"the archive's index.json must annotate io.containerd.image.name={ref}")

    def start(self, *, timeout: float = 120.0) -> None:
        """kubelet, kube-scheduler and kube-proxy; returns once the node is Ready."""
        node_ip = self.plane.node_ip
        if not node_ip:
            raise ValueError("the control plane must be started with node_ip for a node to join it")
        plane = self.plane
        kubelet_dir = self.workdir / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        resolv = self.workdir / "resolv.conf"
        # No DNS leaves this machine: pods get a resolver that answers nothing.
        resolv.write_text("nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n")
        kubelet_conf = self.workdir / "kubelet-config.json"
        kubelet_conf.write_text(json.dumps(kubelet_config(
            socket=self.socket, node_ip=node_ip, port=free_port(), healthz_port=(healthz := free_port()),
            ca_file=plane.ca_file, resolv_conf=resolv, pod_logs=self.workdir / "pod-logs")))
        kubelet_kc = plane.component_kubeconfig("kubelet", user=f"system:node:{NODE_NAME}",
                                                organizations=("system:nodes",))
        kubelet = self._spawn("kubelet", [
            self._binary("kubelet"),
            f"--config={kubelet_conf}",
            f"--kubeconfig={kubelet_kc}",
            f"--root-dir={kubelet_dir}",
            f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--node-ip={node_ip}",
            f"--hostname-override={NODE_NAME}",
            "--v=1",
        ])
        scheduler_kc = plane.component_kubeconfig("kube-scheduler", user="system:kube-scheduler")
        self._spawn("kube-scheduler", [
            self._binary("kube-scheduler"),
            f"--kubeconfig={scheduler_kc}",
            f"--authentication-kubeconfig={scheduler_kc}",
            f"--authorization-kubeconfig={scheduler_kc}",
            "--leader-elect=false",
            f"--secure-port={free_port()}",
            "--bind-address=127.0.0.1",
            "--v=1",
        ])
        proxy_kc = plane.component_kubeconfig("kube-proxy", user="system:kube-proxy")
        proxy_conf = self.workdir / "kube-proxy-config.json"
        proxy_conf.write_text(json.dumps(kube_proxy_config(
            kubeconfig=proxy_kc, node_ip=node_ip, healthz_port=free_port(), metrics_port=free_port())))
        self._spawn("kube-proxy", [self._binary("kube-proxy"), f"--config={proxy_conf}", "--v=1"])
        kubelet.wait_healthy(lambda: _http_ok(f"http://127.0.0.1:{healthz}/healthz"), timeout=timeout)
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float) -> None:
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(self.plane.kubeconfig_path)))
        deadline = time.monotonic() + timeout
        last = "not registered"
        while time.monotonic() < deadline:
            for proc in self.processes:
                if not proc.alive():
                    raise StartupError(f"{proc.name} exited while the node was starting:\n{log_tail(proc.log_path)}")
            with contextlib.suppress(client.ApiException):
                node = api.read_node(NODE_NAME)
                ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
                if ready and ready[0].status == "True":
                    return
                last = f"{ready[0].reason}: {ready[0].message}" if ready else "no Ready condition yet"
            time.sleep(0.5)
        tails = "\n".join(f"--- {p.name}\n{log_tail(p.log_path, 15)}" for p in self.processes)
        raise StartupError(f"node {NODE_NAME} not Ready after {timeout:.0f}s ({last})\n{tails}")

    def stop(self) -> list[str]:
        """Stop every component, then kill what runs in the pods and undo the host changes."""
        for proc in reversed(self.processes):
            proc.stop(grace=5)
        return cleanup_host(self.workdir, self.assets)


def host_network(workdir: Path) -> HostNetwork:
    """The node's host-network changes, with their undo record in ``workdir``."""
    return HostNetwork(service_cidr=SERVICE_CIDR, pod_cidr_block=POD_CIDR_BLOCK, pod_cidr=POD_CIDR,
                       bridge=BRIDGE, state_file=workdir / "hostnet.json")


def _http_ok(url: str) -> bool:
    import urllib.request  # noqa: PLC0415 - only for this probe

    with urllib.request.urlopen(url, timeout=2) as resp:
        return int(resp.status) == 200


def shim_pids(socket: Path) -> list[int]:
    """containerd-shim processes started by the containerd listening on ``socket``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
                found.append(int(proc.name))
    return found


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def kubepods_cgroups() -> list[Path]:
    """The kubelet's cgroup folders (cgroupfs driver), deepest first."""
    found: list[Path] = []
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / "kubepods"
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pod_processes() -> int:
    """SIGKILL every process in the kubelet's cgroups (containers outlive their shims otherwise)."""
    killed = 0
    for cg in kubepods_cgroups():
        with contextlib.suppress(OSError):
            for pid in (cg / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
    return killed


def cleanup_host(workdir: Path, assets: Path | None = None) -> list[str]:
    """Undo the node's host changes; safe to call again and after a crash. Returns what is left."""
    problems: list[str] = []
    socket = workdir / "containerd" / "containerd.sock"
    for _ in range(20):
        if not kill_pod_processes():
            break
        time.sleep(0.1)
    for pid in shim_pids(socket):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill_group(pid, grace=3)
    if assets is not None and os.access(assets / "kube-proxy", os.X_OK):
        subprocess.run([str(assets / "kube-proxy"), "--cleanup"], capture_output=True, check=False, timeout=60)
    for point in mounts_under(workdir):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else []:
        if subprocess.run(["umount", str(netns)], capture_output=True, check=False).returncode == 0:
            netns.unlink(missing_ok=True)
    for cg in kubepods_cgroups():
        for _ in range(50):  # a killed process leaves its cgroup a moment later
            try:
                cg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    problems.append(f"cgroup {cg}: {exc.strerror}")
                    break
                time.sleep(0.1)
        else:
            problems.append(f"cgroup {cg}: still busy")
    problems += host_network(workdir).teardown()
    left = mounts_under(workdir)
    if left:
        problems.append(f"still mounted: {', '.join(left[:5])}")
    return problems
