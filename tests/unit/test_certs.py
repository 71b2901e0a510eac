"""Certificates: the chain verifies, SANs are right, reuse and renewal decisions."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from certs.bundle import CA_CERT, CA_KEY, TLS_CERT, CertPolicy, plan_bundle, sans, service_hosts, signed_by
from certs.issuance import issue_ca, issue_client, issue_serving, needs_renewal, not_after

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
POLICY = CertPolicy(hosts=service_hosts("leoflow-staging-webhook", "platform"))


def test_chain_verifies_and_sans_cover_the_service() -> None:
    bundle, why = plan_bundle(None, POLICY, now=NOW)
    assert why == "created"
    assert signed_by(bundle.serving.cert_pem, bundle.ca.cert_pem)
    assert sans(bundle.serving.cert_pem) == {
        "leoflow-staging-webhook.platform.svc", "leoflow-staging-webhook", "leoflow-staging-webhook.platform",
        "leoflow-staging-webhook.platform.svc.cluster.local"}
    ca = x509.load_pem_x509_certificate(bundle.ca.cert_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf = x509.load_pem_x509_certificate(bundle.serving.cert_pem)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_existing_secret_is_reused_then_renewed_near_expiry() -> None:
    first, _ = plan_bundle(None, POLICY, now=NOW)
    data = first.as_secret_data()
    again, why = plan_bundle(data, POLICY, now=NOW + dt.timedelta(days=100))
    assert why == "reused" and again == first
    later, why = plan_bundle(data, POLICY, now=NOW + dt.timedelta(days=340))  # within 30 d of expiry
    assert why == "renewed serving certificate"
    assert later.ca == first.ca  # the caBundle the apiserver trusts stays the same
    assert signed_by(later.serving.cert_pem, first.ca.cert_pem)
    assert not_after(later.serving.cert_pem) > not_after(first.serving.cert_pem)


def test_changed_service_name_or_foreign_cert_reissues() -> None:
    first, _ = plan_bundle(None, POLICY, now=NOW)
    other = CertPolicy(hosts=service_hosts("renamed", "platform"))
    _, why = plan_bundle(first.as_secret_data(), other, now=NOW)
    assert why == "renewed serving certificate"
    foreign_ca = issue_ca(common_name="x", now=NOW, validity=dt.timedelta(days=10))
    data = first.as_secret_data() | {TLS_CERT: issue_serving(foreign_ca, hosts=POLICY.hosts, now=NOW,
                                                              validity=dt.timedelta(days=300)).cert_pem}
    _, why = plan_bundle(data, POLICY, now=NOW)
    assert why == "renewed serving certificate"


def test_expiring_ca_is_replaced() -> None:
    first, _ = plan_bundle(None, POLICY, now=NOW)
    _, why = plan_bundle(first.as_secret_data(), POLICY, now=NOW + dt.timedelta(days=3640))
    assert why == "new CA and serving certificate"
    _, why = plan_bundle({CA_CERT: b"garbage", CA_KEY: b"garbage"}, POLICY, now=NOW)
    assert why == "new CA and serving certificate"


def test_client_certificates_carry_groups() -> None:
    ca = issue_ca(common_name="ca", now=NOW, validity=dt.timedelta(days=1))
    admin = issue_client(ca, common_name="admin", organizations=("system:masters",), now=NOW,
                         validity=dt.timedelta(days=1))
    cert = x509.load_pem_x509_certificate(admin.cert_pem)
    assert cert.subject.rfc4514_string() == "O=system:masters,CN=admin"
    assert needs_renewal(admin.cert_pem, now=NOW, renew_before=dt.timedelta(days=2))
