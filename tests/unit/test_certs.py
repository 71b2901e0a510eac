"""Certificates: the chain verifies, SANs are right, reuse and renewal decisions."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.bundle import (
    CA_CERT,
    CA_KEY,
    NEXT_CERT,
    TLS_CERT,
    TRUST,
    CertPolicy,
    plan_bundle,
    read_bundle,
    sans,
    service_hosts,
    signed_by,
    split_pem,
)
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


def test_expiring_ca_is_rotated_in_and_an_expired_or_unreadable_one_replaced_at_once() -> None:
    first, _ = plan_bundle(None, POLICY, now=NOW)
    later = NOW + dt.timedelta(days=3640)
    rotating, why = plan_bundle(first.as_secret_data(), POLICY, now=later)
    assert why == "new CA (rotation pending)"
    assert rotating.serving == first.serving  # still served until the caBundle trusts the new CA too
    assert rotating.pending is not None and signed_by(rotating.pending.cert_pem, rotating.ca.cert_pem)
    assert rotating.trust == (rotating.ca.cert_pem, first.ca.cert_pem) and rotating.rotating
    again, why = plan_bundle(rotating.as_secret_data(), POLICY, now=later)  # a hook Job retried
    assert why == "rotation pending (reused)" and again == rotating
    _, why = plan_bundle(first.as_secret_data(), POLICY, now=NOW + dt.timedelta(days=3651))  # expired
    assert why == "new CA and serving certificate"
    _, why = plan_bundle({CA_CERT: b"garbage", CA_KEY: b"garbage"}, POLICY, now=NOW)
    assert why == "new CA and serving certificate"


def test_promotion_then_settling_ends_with_the_new_ca_alone() -> None:
    first, _ = plan_bundle(None, POLICY, now=NOW)
    rotating, _ = plan_bundle(first.as_secret_data(), POLICY, now=NOW + dt.timedelta(days=3640))
    promoted = read_bundle(rotating.as_secret_data()).promoted()
    assert rotating.pending is not None and promoted.serving == rotating.pending and promoted.pending is None
    assert promoted.trust == rotating.trust  # replicas still on the old certificate stay trusted
    assert promoted.settled().trust == (rotating.ca.cert_pem,) and not promoted.settled().rotating
    assert rotating.settled() == rotating  # never before the promotion
    stored = promoted.settled().as_secret_data()
    assert stored[TRUST] == rotating.ca.cert_pem and NEXT_CERT not in stored


def test_a_secret_from_before_trust_crt_reads_as_trusting_its_ca() -> None:
    first, _ = plan_bundle(None, POLICY, now=NOW)
    old = {k: v for k, v in first.as_secret_data().items() if k != TRUST}
    assert read_bundle(old).trust == (first.ca.cert_pem,)
    again, why = plan_bundle(old, POLICY, now=NOW)
    assert why == "reused" and again.as_secret_data()[TRUST] == first.ca.cert_pem


def test_split_pem_keeps_each_certificate_and_ignores_the_rest() -> None:
    a = issue_ca(common_name="a", now=NOW, validity=dt.timedelta(days=1)).cert_pem
    b = issue_ca(common_name="b", now=NOW, validity=dt.timedelta(days=1)).cert_pem
    assert split_pem(a + b) == (a, b)
    assert split_pem(b"junk\n" + a + b"\nmore junk") == (a,)
    assert split_pem(b"") == () and split_pem(a[:-30]) == ()


STEPS = st.lists(st.sampled_from(["ensure", "rotate", "patch", "settle"]), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None)
@given(STEPS)
def test_any_sequence_of_hook_runs_keeps_the_served_certificate_trusted(steps: list[str]) -> None:
    data = plan_bundle(None, POLICY, now=NOW)[0].as_secret_data()
    served = data[TLS_CERT]  # what the replicas serve (they lag: they see the Secret only at "settle")
    for step in steps:
        if step in ("ensure", "rotate"):
            policy = POLICY if step == "ensure" else CertPolicy(hosts=POLICY.hosts,
                                                                 renew_before=dt.timedelta(days=100_000))
            data = plan_bundle(data, policy, now=NOW)[0].as_secret_data()
        elif step == "patch":
            data = read_bundle(data).promoted().as_secret_data()
        else:  # the kubelet caught up, every replica serves tls.crt, the patch Job settles
            served = data[TLS_CERT]
            bundle = read_bundle(data)
            if signed_by(served, bundle.ca.cert_pem):
                data = bundle.settled().as_secret_data()
        bundle = read_bundle(data)
        assert any(signed_by(served, ca) for ca in bundle.trust), steps  # never a refusal window
        assert any(signed_by(bundle.serving.cert_pem, ca) for ca in bundle.trust), steps
        assert bundle.trust[0] == bundle.ca.cert_pem and len(bundle.trust) == len(set(bundle.trust)), steps
        assert len(bundle.trust) <= 1 + steps.count("rotate"), steps
        if bundle.pending is not None:
            assert signed_by(bundle.pending.cert_pem, bundle.ca.cert_pem), steps


def test_client_certificates_carry_groups() -> None:
    ca = issue_ca(common_name="ca", now=NOW, validity=dt.timedelta(days=1))
    admin = issue_client(ca, common_name="admin", organizations=("system:masters",), now=NOW,
                         validity=dt.timedelta(days=1))
    cert = x509.load_pem_x509_certificate(admin.cert_pem)
    assert cert.subject.rfc4514_string() == "O=system:masters,CN=admin"
    assert needs_renewal(admin.cert_pem, now=NOW, renew_before=dt.timedelta(days=2))
