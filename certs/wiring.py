"""Keeping the webhook's certificates in a Secret and its CA in the webhook configuration."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from certs.bundle import CA_CERT, TLS_CERT, CertPolicy, plan_bundle, read_bundle, signed_by
from shared.kube.certs_api import CertsKubeApi


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str


def ensure_secret(api: CertsKubeApi, ref: SecretRef, policy: CertPolicy, *, now: dt.datetime,
                  labels: dict[str, str]) -> str:
    """Create the Secret when absent, reuse it when valid, renew what is close to expiry."""
    existing = api.read_secret(ref.namespace, ref.name)
    bundle, why = plan_bundle(existing, policy, now=now)
    if why != "reused":
        api.write_secret(ref.namespace, ref.name, bundle.as_secret_data(), labels=labels,
                         exists=existing is not None)
    return why


@dataclass(frozen=True)
class PatchResult:
    webhooks: int  # webhooks of the configuration whose caBundle was set
    promoted: bool  # a pending certificate from a new CA became the served one
    trusted: int  # CAs in the caBundle at the end (2 while replicas still serve the old CA's certificate)


# What each replica (not terminating) serves: endpoint -> the PEM certificate it presented (None: no handshake).
ServedCertificates = Callable[[], dict[str, bytes | None]]


def patch_webhook(api: CertsKubeApi, ref: SecretRef, config_name: str, *, labels: dict[str, str],
                  served: ServedCertificates | None = None, wait_seconds: float = 0.0,
                  interval: float = 2.0, log: Callable[[str], None] = print) -> PatchResult:
    """Trust the Secret's CAs in the webhook configuration, then complete a CA rotation (certs.bundle):
    promote the pending certificate and, once every replica serves a certificate from the current CA
    (``served``, polled for up to ``wait_seconds``), drop the old CA. Never distrusts what a replica serves:
    without ``served`` or when the wait ends first, both CAs stay trusted and the next run drops the old one."""
    data = api.read_secret(ref.namespace, ref.name)
    if not data or not data.get(CA_CERT) or not data.get(TLS_CERT):
        raise FileNotFoundError(f"Secret {ref.namespace}/{ref.name} has no {CA_CERT}; run `certs ensure-secret`")
    bundle = read_bundle(data)
    count = api.patch_ca_bundle(config_name, bundle.trust_pem())
    promoted = bundle.pending is not None
    if promoted:
        bundle = bundle.promoted()
        api.write_secret(ref.namespace, ref.name, bundle.as_secret_data(), labels=labels, exists=True)
        log(f"Secret {ref.namespace}/{ref.name}: the new CA's serving certificate is now served "
            f"(caBundle trusts {len(bundle.trust)} CAs meanwhile)")
    if len(bundle.trust) > 1 and served is not None:
        deadline = time.monotonic() + wait_seconds
        while True:
            certs = served()
            old = sorted(ep for ep, pem in certs.items() if pem is None or not signed_by(pem, bundle.ca.cert_pem))
            if certs and not old:
                bundle = bundle.settled()
                api.write_secret(ref.namespace, ref.name, bundle.as_secret_data(), labels=labels, exists=True)
                count = api.patch_ca_bundle(config_name, bundle.trust_pem())
                log(f"all {len(certs)} replicas serve the current CA's certificate: the old CA is no "
                    "longer trusted")
                break
            if time.monotonic() >= deadline:
                log(f"replicas not yet serving the current CA's certificate: {', '.join(old) or 'none ready'}; "
                    "both CAs stay trusted (the next `certs patch-webhook` drops the old one)")
                break
            time.sleep(interval)
    return PatchResult(webhooks=count, promoted=promoted, trusted=len(bundle.trust))


def write_files(out_dir: Path, policy: CertPolicy, *, now: dt.datetime) -> list[Path]:
    """ca.crt, tls.crt and tls.key in ``out_dir`` (for running `serve` outside a cluster)."""
    bundle, _ = plan_bundle(None, policy, now=now)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data, mode in (("ca.crt", bundle.ca.cert_pem, 0o644), ("tls.crt", bundle.serving.cert_pem, 0o644),
                             ("tls.key", bundle.serving.key_pem, 0o600)):
        path = out_dir / name
        path.write_bytes(data)
        path.chmod(mode)
        written.append(path)
    return written
