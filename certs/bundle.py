"""Deciding what the webhook's certificate Secret should hold (pure).

An existing CA is kept while it is valid for longer than ``renew_before`` (so the caBundle
the apiserver trusts does not change on every upgrade); the serving certificate is re-issued
when it is close to expiry, when its SANs differ, or when the CA changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.issuance import KeyPair, issue_ca, issue_serving, needs_renewal

CA_CERT, TLS_CERT, TLS_KEY, CA_KEY = "ca.crt", "tls.crt", "tls.key", "ca.key"


@dataclass(frozen=True)
class CertPolicy:
    hosts: tuple[str, ...]
    ca_validity: dt.timedelta = dt.timedelta(days=3650)
    validity: dt.timedelta = dt.timedelta(days=365)
    renew_before: dt.timedelta = dt.timedelta(days=30)


@dataclass(frozen=True)
class Bundle:
    ca: KeyPair
    serving: KeyPair

    def as_secret_data(self) -> dict[str, bytes]:
        return {CA_CERT: self.ca.cert_pem, CA_KEY: self.ca.key_pem, TLS_CERT: self.serving.cert_pem,
                TLS_KEY: self.serving.key_pem}


def service_hosts(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names the apiserver may use for a Service."""
    return (f"{service}.{namespace}.svc", service, f"{service}.{namespace}",
            f"{service}.{namespace}.svc.cluster.local")


def sans(cert_pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in ext.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def plan_bundle(existing: dict[str, bytes] | None, policy: CertPolicy, *, now: dt.datetime) -> tuple[Bundle, str]:
    """The bundle to store and why: "reused", "renewed serving certificate", "new CA" ..."""
    data = existing or {}
    ca: KeyPair | None = None
    if data.get(CA_CERT) and data.get(CA_KEY):
        candidate = KeyPair(data[CA_CERT], data[CA_KEY])
        try:
            if not needs_renewal(candidate.cert_pem, now=now, renew_before=policy.renew_before):
                ca = candidate
        except ValueError:
            ca = None
    if ca is None:
        ca = issue_ca(common_name="leoflow-staging-webhook-ca", now=now, validity=policy.ca_validity)
        serving = issue_serving(ca, hosts=policy.hosts, now=now, validity=policy.validity)
        return Bundle(ca, serving), "new CA and serving certificate" if data else "created"
    cert, key = data.get(TLS_CERT), data.get(TLS_KEY)
    if cert and key:
        try:
            fine = (not needs_renewal(cert, now=now, renew_before=policy.renew_before)
                    and sans(cert) == set(policy.hosts) and signed_by(cert, ca.cert_pem))
        except ValueError:
            fine = False
        if fine:
            return Bundle(ca, KeyPair(cert, key)), "reused"
    serving = issue_serving(ca, hosts=policy.hosts, now=now, validity=policy.validity)
    return Bundle(ca, serving), "renewed serving certificate"
