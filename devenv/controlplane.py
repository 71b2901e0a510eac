"""A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC), kube-controller-manager.

Modelled on controller-runtime's envtest: free loopback ports, a temp data dir, etcd
without fsync, an admin client certificate (O=system:masters) in a kubeconfig.

With ``node_ip`` set it is ready for a real node (``devenv.node``): the apiserver also
listens on that address and advertises it (pods reach it through the ``kubernetes``
Service), authorizes kubelets (Node,RBAC + NodeRestriction), mounts service-account
tokens, and kube-controller-manager runs every controller.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.issuance import KeyPair, issue_ca, issue_client, issue_serving
from devenv.processes import ManagedProcess, free_port

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
# kube-controller-manager's informers resync every min-resync-period to twice that (client-go's jitter): an event
# missed around an apiserver restart is acted on by then. Tests bound their waits for a controller by this.
KCM_MIN_RESYNC_SECONDS = 15
KCM_RESYNC_BOUND_SECONDS = 2 * KCM_MIN_RESYNC_SECONDS
# pvc-protection removes the finalizer of a deleted claim; the garbage collector follows
# ownerReferences; namespace deletes a namespace's content; serviceaccount makes "default";
# resourcequota computes quota usage (quota admission enforces nothing without it).
CONTROLLERS = ",".join(f"{c}-controller" for c in (
    "garbage-collector", "namespace", "persistentvolumeclaim-protection",
    "persistentvolume-protection", "serviceaccount", "resourcequota"))
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
_VALIDITY = dt.timedelta(days=7)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(*, server: str, ca_pem: bytes, client: KeyPair, user: str) -> str:
    """A kubeconfig (JSON is valid YAML) with embedded credentials."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "leoflow-dev", "cluster": {
                "server": server, "certificate-authority-data": _b64(ca_pem)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": _b64(client.cert_pem),
                "client-key-data": _b64(client.key_pem)}}],
            "contexts": [{"name": "leoflow-dev", "context": {"cluster": "leoflow-dev", "user": user}}],
            "current-context": "leoflow-dev",
        },
        indent=2,
    )


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager rooted in ``workdir``."""

    assets: Path
    workdir: Path
    die_with_parent: bool = True
    node_ip: str | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    api_port: int = 0
    kubeconfig_path: Path = field(default=Path())

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def log_paths(self) -> list[Path]:
        return [p.log_path for p in self.processes]

    def _binary(self, name: str) -> str:
        path = self.assets / name
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{name} not found in {self.assets} (run hack/build-control-plane.sh)")
        return str(path)

    def _pki(self) -> dict[str, Path]:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca = issue_ca(common_name="leoflow-dev-ca", now=now, validity=_VALIDITY)
        self.ca = ca
        serving = issue_serving(
            ca,
            hosts=("127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                   "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", KUBERNETES_SERVICE_IP,
                   *((self.node_ip,) if self.node_ip else ())),
            now=now, validity=_VALIDITY,
        )
        kubelet_client = issue_client(ca, common_name="kube-apiserver-kubelet-client",
                                      organizations=("system:masters",), now=now, validity=_VALIDITY)
        admin = issue_client(ca, common_name="leoflow-admin", organizations=("system:masters",),
                             now=now, validity=_VALIDITY)
        kcm = issue_client(ca, common_name="system:kube-controller-manager", now=now, validity=_VALIDITY)
        sa_key = ec.generate_private_key(ec.SECP256R1())
        paths = {
            "ca": _write(pki / "ca.crt", ca.cert_pem, 0o644),
            "ca-key": _write(pki / "ca.key", ca.key_pem),
            "serving-cert": _write(pki / "apiserver.crt", serving.cert_pem, 0o644),
            "serving-key": _write(pki / "apiserver.key", serving.key_pem),
            "sa-key": _write(pki / "sa.key", sa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption())),
            "sa-pub": _write(pki / "sa.pub", sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644),
            "kubelet-client-cert": _write(pki / "kubelet-client.crt", kubelet_client.cert_pem, 0o644),
            "kubelet-client-key": _write(pki / "kubelet-client.key", kubelet_client.key_pem),
        }
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self._admin = admin
        self._ca_pem = ca.cert_pem
        self._kcm_kubeconfig = self.workdir / "kube-controller-manager.kubeconfig"
        self.api_port = free_port()
        _write(self.kubeconfig_path, kubeconfig(
            server=self.server, ca_pem=ca.cert_pem, client=admin, user="leoflow-admin").encode())
        _write(self._kcm_kubeconfig, kubeconfig(
            server=self.server, ca_pem=ca.cert_pem, client=kcm,
            user="system:kube-controller-manager").encode())
        return paths

    def component_kubeconfig(self, name: str, *, user: str, organizations: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for a node component (kubelet, kube-scheduler, kube-proxy) with its own client cert."""
        cert = issue_client(self.ca, common_name=user, organizations=organizations,
                            now=dt.datetime.now(dt.UTC), validity=_VALIDITY)
        return _write(self.workdir / f"{name}.kubeconfig", kubeconfig(
            server=self.server, ca_pem=self.ca.cert_pem, client=cert, user=user).encode())

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self._ca_pem.decode())
        cert = self.workdir / "pki" / "admin.crt"
        key = self.workdir / "pki" / "admin.key"
        _write(cert, self._admin.cert_pem)
        _write(key, self._admin.key_pem)
        ctx.load_cert_chain(cert, key)
        return ctx

    def get(self, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` on the apiserver as admin."""
        req = urllib.request.Request(self.server + path)
        with urllib.request.urlopen(req, context=self._tls_context(), timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())

    def start(self, *, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self._pki()
        logs = self.workdir / "logs"
        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = ManagedProcess("etcd", [
            self._binary("etcd"),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ], logs / "etcd.log", self.die_with_parent)
        self.processes.append(etcd)
        etcd.start()
        etcd.wait_healthy(lambda: b'"health":"true"' in urllib.request.urlopen(
            etcd_url + "/health", timeout=2).read(), timeout=timeout)

        if self.node_ip:
            node_flags = [
                "--bind-address=0.0.0.0",
                f"--advertise-address={self.node_ip}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki['kubelet-client-cert']}",
                f"--kubelet-client-key={pki['kubelet-client-key']}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            node_flags = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
            ]
        apiserver = ManagedProcess("kube-apiserver", [
            self._binary("kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki['serving-cert']}",
            f"--tls-private-key-file={pki['serving-key']}",
            f"--client-ca-file={pki['ca']}",
            f"--secure-port={self.api_port}",
            *node_flags,
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki['sa-pub']}",
            f"--service-account-signing-key-file={pki['sa-key']}",
            "--profiling=false",
            "--v=1",
        ], logs / "kube-apiserver.log", self.die_with_parent)
        self.processes.append(apiserver)
        apiserver.start()
        apiserver.wait_healthy(lambda: self.get("/readyz", timeout=2)[0] == 200, timeout=timeout)

        kcm_port = free_port()
        kcm = ManagedProcess("kube-controller-manager", [
            self._binary("kube-controller-manager"),
            f"--kubeconfig={self._kcm_kubeconfig}",
            f"--authentication-kubeconfig={self._kcm_kubeconfig}",
            f"--authorization-kubeconfig={self._kcm_kubeconfig}",
            *(["--controllers=*", f"--root-ca-file={pki['ca']}",
               f"--service-account-private-key-file={pki['sa-key']}"] if self.node_ip
              else [f"--controllers={CONTROLLERS}"]),
            "--leader-elect=false",
            f"--secure-port={kcm_port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--use-service-account-credentials=true",
            f"--min-resync-period={KCM_MIN_RESYNC_SECONDS}s",  # the default 12h: see KCM_RESYNC_BOUND_SECONDS
            "--kube-api-qps=200",  # the default 20 makes pvc-protection take minutes for big sweeps
            "--kube-api-burst=400",
            "--v=1",
        ], logs / "kube-controller-manager.log", self.die_with_parent)
        self.processes.append(kcm)
        kcm.start()
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving cert; only /healthz is read
        kcm.wait_healthy(lambda: urllib.request.urlopen(
            f"https://127.0.0.1:{kcm_port}/healthz", context=insecure, timeout=2).status == 200,
            timeout=timeout)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (its clients see their connections and watches end)."""
        next(p for p in self.processes if p.name == "kube-apiserver").stop()

    def start_apiserver(self, *, timeout: float = 90.0) -> None:
        """Start the stopped kube-apiserver again, same flags, same port, same etcd; wait until ready."""
        apiserver = next(p for p in self.processes if p.name == "kube-apiserver")
        apiserver.start()
        apiserver.wait_healthy(lambda: self.get("/readyz", timeout=2)[0] == 200, timeout=timeout)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.popen is not None]
