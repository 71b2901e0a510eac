"""A CA rotation in the built-in certificate mode refuses no pod: the real apiserver calls a real webhook whose
certificate files change the way the kubelet changes a mounted Secret (an atomic swap, some seconds after the
Secret changed), while pods are created without pause before, during and after the rotation."""

from __future__ import annotations

import base64
import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from certs.bundle import CertPolicy, read_bundle, signed_by, split_pem
from certs.probe import served_certificates
from certs.wiring import PatchResult, SecretRef, ensure_secret, patch_webhook
from devenv.webhook import TEST_WEBHOOK_LABEL, WebhookProcess
from shared.kube.certs_api import CertsKubeApi
from tests.support.pods import task_pod

pytestmark = pytest.mark.e2e
LABELS = {"app.kubernetes.io/managed-by": "leoflow-staging"}
KUBELET_DELAY = 3.0  # seconds between a Secret change and the swap of the mounted files


class MountedSecret:
    """The kubelet's way of updating a Secret volume: the files are links into a folder that is swapped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.version = 0
        (workdir / "v0").mkdir(parents=True)
        (workdir / "current").symlink_to("v0")
        for name in ("tls.crt", "tls.key"):
            (workdir / name).symlink_to(Path("current") / name)

    def swap(self, data: dict[str, bytes]) -> None:
        self.version += 1
        folder = self.workdir / f"v{self.version}"
        folder.mkdir()
        (folder / "tls.crt").write_bytes(data["tls.crt"])
        (folder / "tls.key").write_bytes(data["tls.key"])
        link = self.workdir / "current.new"
        link.symlink_to(folder.name)
        os.replace(link, self.workdir / "current")


class Creator(threading.Thread):
    """Creates opted-in pods of one run, one after another, and keeps every refusal."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core, self.namespace = core, namespace
        self.stop = threading.Event()
        self.admitted: list[float] = []
        self.refused: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            body = task_pod("rotation", "run-1")
            try:
                pod = self.core.create_namespaced_pod(self.namespace, body)
                assert pod.metadata.annotations["leoflow.io/staging-pvc"]
                self.admitted.append(time.monotonic())
            except client.ApiException as exc:
                self.refused.append(f"{exc.status}: {exc.body[:300] if exc.body else exc.reason}")


@dataclass
class Rotating:
    server: WebhookProcess
    mounted: MountedSecret
    namespace: str
    config: str  # the MutatingWebhookConfiguration's name


@pytest.fixture
def rotating(webhook_db: str, kubeconfig: Path, api: client.ApiClient, core: client.CoreV1Api, rwx_class: str,
             tmp_path: Path) -> Iterator[Rotating]:
    mounted = MountedSecret(tmp_path / "secret")
    server = WebhookProcess(workdir=tmp_path / "secret", env={
        "LEOFLOW_STAGING_DATABASE_URL": webhook_db, "LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig),
        "LEOFLOW_STAGING_DEFAULT_SIZE": "1Gi", "LEOFLOW_STAGING_WORKERS": "1"})
    server.start()  # writes its own first certificate through the links, into v0
    label = f"rotation-{uuid.uuid4().hex[:6]}"
    namespace = f"t-{label}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {TEST_WEBHOOK_LABEL: label}}})
    name = f"leoflow-staging-{label}"
    server.register(api, name, namespace_label=label)
    try:
        yield Rotating(server, mounted, namespace, name)
    finally:
        client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(name)
        core.delete_namespace(namespace)
        server.stop()


def _secret(certs: CertsKubeApi, ref: SecretRef) -> dict[str, bytes]:
    data = certs.read_secret(ref.namespace, ref.name)
    assert data is not None
    return data


def _ca_bundle(api: client.ApiClient, name: str) -> tuple[bytes, ...]:
    stored = client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(name)
    return split_pem(base64.b64decode(stored.webhooks[0].client_config.ca_bundle))


def test_a_ca_rotation_refuses_no_pod(rotating: Rotating, api: client.ApiClient, core: client.CoreV1Api) -> None:
    server, mounted, namespace, config = rotating.server, rotating.mounted, rotating.namespace, rotating.config
    certs = CertsKubeApi(api, timeout=10)
    ref = SecretRef(namespace, "tls")
    policy = CertPolicy(hosts=("127.0.0.1", "localhost"))
    now = dt.datetime.now(dt.UTC)
    assert ensure_secret(certs, ref, policy, now=now, labels=LABELS) == "created"
    mounted.swap(_secret(certs, ref))  # the install: the replica serves the Secret's certificate
    assert patch_webhook(certs, ref, config, labels=LABELS) == PatchResult(webhooks=1, promoted=False, trusted=1)
    old_ca = _secret(certs, ref)["ca.crt"]

    creator = Creator(core, namespace)
    creator.start()
    time.sleep(3)
    before = len(creator.admitted)

    # The upgrade: the pre-upgrade hook plans a new CA, the post-upgrade hook patches while the kubelet lags.
    rotate = CertPolicy(hosts=policy.hosts, renew_before=dt.timedelta(days=100_000))
    assert ensure_secret(certs, ref, rotate, now=now, labels=LABELS) == "new CA (rotation pending)"
    pending = _secret(certs, ref)
    assert pending["tls.crt"] == read_bundle(pending).serving.cert_pem and signed_by(pending["tls.crt"], old_ca)
    new_ca = pending["ca.crt"]
    assert new_ca != old_ca and signed_by(pending["next.crt"], new_ca)

    def kubelet() -> None:  # swaps the files some seconds after the promotion reached the Secret
        while "next.crt" in _secret(certs, ref):
            time.sleep(0.2)
        time.sleep(KUBELET_DELAY)
        mounted.swap(_secret(certs, ref))

    swapper = threading.Thread(target=kubelet, daemon=True)
    swapper.start()
    logged: list[str] = []
    started = time.monotonic()
    result = patch_webhook(certs, ref, config, labels=LABELS, wait_seconds=60, interval=0.5, log=logged.append,
                           served=served_certificates(lambda: [("127.0.0.1", server.port)]))
    settled_after = time.monotonic() - started
    swapper.join(timeout=30)
    during = len(creator.admitted) - before
    time.sleep(3)
    creator.stop.set()
    creator.join(timeout=30)

    assert creator.refused == [], creator.refused[:5]
    assert result == PatchResult(webhooks=1, promoted=True, trusted=1), logged
    assert settled_after >= KUBELET_DELAY  # the old CA was kept while the replica still served its certificate
    assert _ca_bundle(api, config) == split_pem(new_ca)
    final = _secret(certs, ref)
    assert "next.crt" not in final and "next.key" not in final
    assert split_pem(final["trust.crt"]) == split_pem(new_ca) and signed_by(final["tls.crt"], new_ca)
    after = len(creator.admitted) - before - during
    assert before > 0 and during > 0 and after > 0, (before, during, after)
    print(f"CA rotation: {len(creator.admitted)} pods admitted ({before} before, {during} during, {after} after), "
          f"0 refused; old CA dropped {settled_after:.1f} s after the patch began")


def test_a_replica_still_on_the_old_certificate_keeps_both_cas(rotating: Rotating, api: client.ApiClient) -> None:
    server, mounted, namespace, config = rotating.server, rotating.mounted, rotating.namespace, rotating.config
    certs = CertsKubeApi(api, timeout=10)
    ref = SecretRef(namespace, "tls")
    policy = CertPolicy(hosts=("127.0.0.1",))
    now = dt.datetime.now(dt.UTC)
    ensure_secret(certs, ref, policy, now=now, labels=LABELS)
    mounted.swap(_secret(certs, ref))
    old_ca = _secret(certs, ref)["ca.crt"]
    ensure_secret(certs, ref, CertPolicy(hosts=policy.hosts, renew_before=dt.timedelta(days=100_000)), now=now,
                  labels=LABELS)
    new_ca = _secret(certs, ref)["ca.crt"]
    logged: list[str] = []
    unreachable = served_certificates(lambda: [("127.0.0.1", server.port), ("127.0.0.1", 1)])
    result = patch_webhook(certs, ref, config, labels=LABELS, wait_seconds=1, interval=0.2, log=logged.append,
                           served=unreachable)
    assert result == PatchResult(webhooks=1, promoted=True, trusted=2)
    assert _ca_bundle(api, config) == split_pem(new_ca) + split_pem(old_ca)
    assert "127.0.0.1:1" in logged[-1] and "both CAs stay trusted" in logged[-1]
    # The next run (the next upgrade), once the replica serves the new certificate, drops the old CA.
    mounted.swap(_secret(certs, ref))
    again = patch_webhook(certs, ref, config, labels=LABELS, wait_seconds=10, interval=0.2, log=logged.append,
                          served=served_certificates(lambda: [("127.0.0.1", server.port)]))
    assert again == PatchResult(webhooks=1, promoted=False, trusted=1)
    assert _ca_bundle(api, config) == split_pem(new_ca)


def test_live_endpoints_skip_terminating_ones(api: client.ApiClient, namespace: str) -> None:
    discovery = client.DiscoveryV1Api(api)
    discovery.create_namespaced_endpoint_slice(namespace, {
        "metadata": {"name": "hook-abc", "labels": {"kubernetes.io/service-name": "hook"}},
        "addressType": "IPv4", "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}},
                      {"addresses": ["192.0.2.11"], "conditions": {"ready": False}},
                      {"addresses": ["192.0.2.12"], "conditions": {"ready": False, "terminating": True}}]})
    discovery.create_namespaced_endpoint_slice(namespace, {
        "metadata": {"name": "other-abc", "labels": {"kubernetes.io/service-name": "other"}},
        "addressType": "IPv4", "ports": [{"port": 9000}], "endpoints": [{"addresses": ["192.0.2.20"]}]})
    assert CertsKubeApi(api, timeout=10).live_endpoints(namespace, "hook") == [("192.0.2.10", 8443),
                                                                              ("192.0.2.11", 8443)]
