"""Keeping the webhook's certificates in a Secret and its CA in the webhook configuration."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from certs.bundle import CA_CERT, CertPolicy, plan_bundle
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


def patch_webhook(api: CertsKubeApi, ref: SecretRef, config_name: str) -> int:
    data = api.read_secret(ref.namespace, ref.name)
    if not data or not data.get(CA_CERT):
        raise FileNotFoundError(f"Secret {ref.namespace}/{ref.name} has no {CA_CERT}; run `certs ensure-secret`")
    return api.patch_ca_bundle(config_name, data[CA_CERT])


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
