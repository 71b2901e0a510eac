"""Deciding what the webhook's certificate Secret should hold (pure).

An existing CA is kept while it is valid for longer than ``renew_before`` (so the caBundle
the apiserver trusts does not change on every upgrade); the serving certificate is re-issued
when it is close to expiry or when its SANs differ.

A new CA is rotated in without a moment in which the apiserver distrusts what a replica serves:
1. ``plan_bundle`` (pre-upgrade hook) stores the new CA and a serving certificate from it as *next*
   (``next.crt``/``next.key``); the replicas keep serving ``tls.crt`` from the old CA, and ``trust.crt``
   holds both CAs.
2. ``patch-webhook`` (post-upgrade hook) puts ``trust.crt`` (both CAs) into the caBundle, then
   ``promoted()`` moves *next* into ``tls.crt``/``tls.key``; the kubelet refreshes the mounted Secret
   and each replica serves the new certificate from its next TLS connection on.
3. Once every replica (ready or starting) serves a certificate from the new CA, ``settled()`` drops the old CA from
   ``trust.crt`` and the caBundle.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.issuance import KeyPair, issue_ca, issue_serving, needs_renewal

CA_CERT, TLS_CERT, TLS_KEY, CA_KEY = "ca.crt", "tls.crt", "tls.key", "ca.key"
TRUST, NEXT_CERT, NEXT_KEY = "trust.crt", "next.crt", "next.key"


@dataclass(frozen=True)
class CertPolicy:
    hosts: tuple[str, ...]
    ca_validity: dt.timedelta = dt.timedelta(days=3650)
    validity: dt.timedelta = dt.timedelta(days=365)
    renew_before: dt.timedelta = dt.timedelta(days=30)


@dataclass(frozen=True)
class Bundle:
    """The Secret's content: the current CA, the served certificate, a pending one from the current CA
    while a rotation is under way, and the CAs the webhook configuration must trust (newest first)."""

    ca: KeyPair
    serving: KeyPair
    pending: KeyPair | None = None
    trust: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not self.trust:
            object.__setattr__(self, "trust", (self.ca.cert_pem,))

    def as_secret_data(self) -> dict[str, bytes]:
        data = {CA_CERT: self.ca.cert_pem, CA_KEY: self.ca.key_pem, TLS_CERT: self.serving.cert_pem,
                TLS_KEY: self.serving.key_pem, TRUST: b"".join(self.trust)}
        if self.pending is not None:
            data[NEXT_CERT], data[NEXT_KEY] = self.pending.cert_pem, self.pending.key_pem
        return data

    def trust_pem(self) -> bytes:
        return b"".join(self.trust)

    def promoted(self) -> Bundle:
        """Step 2: the pending certificate becomes the served one; the trust stays (old replicas)."""
        if self.pending is None:
            return self
        return Bundle(self.ca, self.pending, None, self.trust)

    def settled(self) -> Bundle:
        """Step 3, once every replica serves a certificate from the current CA: trust the current CA only."""
        if self.pending is not None:
            return self
        return Bundle(self.ca, self.serving, None, (self.ca.cert_pem,))

    @property
    def rotating(self) -> bool:
        return self.pending is not None or self.trust != (self.ca.cert_pem,)


def split_pem(data: bytes) -> tuple[bytes, ...]:
    """The PEM certificates in ``data``, each with its own END line (anything else is ignored)."""
    end = b"-----END CERTIFICATE-----"
    out, rest = [], data
    while (start := rest.find(b"-----BEGIN CERTIFICATE-----")) >= 0:
        stop = rest.find(end, start)
        if stop < 0:
            break
        out.append(rest[start:stop + len(end)] + b"\n")
        rest = rest[stop + len(end):]
    return tuple(out)


def read_bundle(data: dict[str, bytes]) -> Bundle:
    """The Bundle stored in a Secret (one written before trust.crt existed trusts its CA alone)."""
    pending = KeyPair(data[NEXT_CERT], data[NEXT_KEY]) if data.get(NEXT_CERT) and data.get(NEXT_KEY) else None
    trust = split_pem(data.get(TRUST, b"")) or (data[CA_CERT],)
    return Bundle(KeyPair(data[CA_CERT], data.get(CA_KEY, b"")), KeyPair(data[TLS_CERT], data.get(TLS_KEY, b"")),
                  pending, trust)


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


def _still_valid(pem: bytes, policy: CertPolicy, now: dt.datetime) -> bool:
    try:
        return not needs_renewal(pem, now=now, renew_before=policy.renew_before)
    except ValueError:
        return False


def _usable(pem: bytes, now: dt.datetime) -> bool:
    """Still within its validity (a CA that expired verifies nothing: replacing it at once loses nothing)."""
    try:
        return not needs_renewal(pem, now=now, renew_before=dt.timedelta(0))
    except ValueError:
        return False


def _serving_fine(pair: KeyPair, ca: KeyPair, policy: CertPolicy, now: dt.datetime) -> bool:
    try:
        return (_still_valid(pair.cert_pem, policy, now) and sans(pair.cert_pem) == set(policy.hosts)
                and signed_by(pair.cert_pem, ca.cert_pem))
    except ValueError:
        return False


def plan_bundle(existing: dict[str, bytes] | None, policy: CertPolicy, *, now: dt.datetime) -> tuple[Bundle, str]:
    """The bundle to store and why: "created", "reused", "renewed serving certificate", "new CA (rotation
    pending)" ..."""
    data = existing or {}
    ca: KeyPair | None = None
    if data.get(CA_CERT) and data.get(CA_KEY):
        candidate = KeyPair(data[CA_CERT], data[CA_KEY])
        if _still_valid(candidate.cert_pem, policy, now):
            ca = candidate
    cert, key = data.get(TLS_CERT), data.get(TLS_KEY)
    served = KeyPair(cert, key) if cert and key else None
    if ca is None:
        ca = issue_ca(common_name="leoflow-staging-webhook-ca", now=now, validity=policy.ca_validity)
        serving = issue_serving(ca, hosts=policy.hosts, now=now, validity=policy.validity)
        if served is None or not data.get(CA_CERT) or not _usable(data[CA_CERT], now):
            # Nothing the apiserver could still verify is served: no reason to wait.
            return Bundle(ca, serving), "new CA and serving certificate" if data else "created"
        # Rotation: keep serving the old certificate until the caBundle trusts both CAs (see the module). Every CA
        # trusted so far stays trusted: a rotation may begin again before the last one settled, while replicas
        # still serve a certificate from any of them; only settling (every replica checked) drops them.
        known = split_pem(data.get(TRUST, b"")) or split_pem(data[CA_CERT]) or (data[CA_CERT],)
        return Bundle(ca, served, serving, (ca.cert_pem, *known)), "new CA (rotation pending)"
    previous = read_bundle(data) if served is not None else None
    pending = previous.pending if previous is not None else None
    if pending is not None and previous is not None:
        if _serving_fine(pending, ca, policy, now):
            return previous, "rotation pending (reused)"
        fresh = issue_serving(ca, hosts=policy.hosts, now=now, validity=policy.validity)
        return Bundle(ca, previous.serving, fresh, previous.trust), "rotation pending (renewed next certificate)"
    if served is not None and _serving_fine(served, ca, policy, now):
        return Bundle(ca, served, None, previous.trust if previous else ()), "reused"
    serving = issue_serving(ca, hosts=policy.hosts, now=now, validity=policy.validity)
    return Bundle(ca, serving, None, previous.trust if previous else ()), "renewed serving certificate"
