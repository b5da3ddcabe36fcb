"""What the injector issues and when it renews (pure: the clock is an argument)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from spendgate.operator.injector import certificates
from spendgate.operator.injector.certificates import Material, MaterialError, Policy

START = datetime(2026, 12, 1, tzinfo=UTC)
POLICY = Policy(hosts=("spendgate-injector.sg.svc", "127.0.0.1"), validity=timedelta(days=90),
                renew_before=timedelta(days=30), ca_validity=timedelta(days=365))


def issued(now: datetime = START) -> Material:
    material = certificates.renew(None, POLICY, now)
    assert material is not None
    return material


def test_a_fresh_pair_is_signed_by_its_ca_for_the_hosts() -> None:
    material = issued()
    cert = x509.load_pem_x509_certificate(material.cert)

    certificates.validate(material)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["spendgate-injector.sg.svc"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert certificates.not_after(material.cert) == START + POLICY.validity
    assert len(material.ca_certs) == 1


def test_nothing_is_due_until_renew_before_the_expiry() -> None:
    material = issued()
    due = certificates.next_check(material, POLICY, START)

    assert due == START + POLICY.validity - POLICY.renew_before
    assert certificates.renew(material, POLICY, due - timedelta(seconds=1)) is None
    renewed = certificates.renew(material, POLICY, due)
    assert renewed is not None and renewed.cert != material.cert
    assert renewed.ca_certs == material.ca_certs  # the same CA: the webhook's CA bundle does not change


def test_a_ca_that_would_expire_before_a_new_certificate_is_replaced_and_kept_in_the_bundle_until_it_expires() -> None:
    material = issued()
    near_the_end = START + POLICY.ca_validity - POLICY.validity + timedelta(seconds=1)

    rolled = certificates.renew(material, POLICY, near_the_end)

    assert rolled is not None and len(rolled.ca_certs) == 2 and rolled.ca_certs[1] == material.ca_certs[0]
    certificates.validate(rolled)
    after_the_old_ca = START + POLICY.ca_validity + timedelta(seconds=1)
    pruned = certificates.renew(rolled, POLICY, after_the_old_ca)
    assert pruned is not None and pruned.ca_certs == rolled.ca_certs[:1]


def test_changed_hosts_get_a_new_certificate() -> None:
    material = issued()
    renewed = certificates.renew(material, replace(POLICY, hosts=("other.sg.svc",)), START)

    assert renewed is not None and renewed.ca_certs == material.ca_certs


def test_unusable_material_is_named() -> None:
    material = issued()
    other = issued()
    with pytest.raises(MaterialError, match="does not match the serving certificate"):
        certificates.renew(replace(material, key=other.key), POLICY, START)
    with pytest.raises(MaterialError, match="not signed by the newest CA"):
        certificates.renew(replace(material, cert=other.cert, key=other.key), POLICY, START)
    with pytest.raises(MaterialError, match="not a PEM certificate"):
        certificates.renew(replace(material, cert=b"garbage"), POLICY, START)


def test_a_pem_bundle_splits_into_its_certificates() -> None:
    first, second = issued(), issued()
    bundle = first.ca_bundle + second.ca_bundle

    assert certificates.split_pems(bundle) == (first.ca_certs[0], second.ca_certs[0])


@pytest.mark.parametrize(("policy", "message"), [
    (replace(POLICY, hosts=()), "at least one host"),
    (replace(POLICY, renew_before=timedelta(days=90)), "shorter than the validity"),
    (replace(POLICY, ca_validity=timedelta(days=90)), "must be longer"),
])
def test_a_policy_that_cannot_work_is_refused(policy: Policy, message: str) -> None:
    assert message in (policy.problem() or "")
