"""The webhook's certificates when cert-manager does not issue them: what to issue and when.

Pure (the clock is an argument). A private CA signs a short-lived serving certificate that is
renewed `renew_before` its expiry; the CA lives much longer and is replaced only once it would
expire before a freshly issued certificate. A replaced CA stays in the CA bundle until it expires,
so the API server trusts every certificate a replica may still be serving during a rollover.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BACKDATE = timedelta(minutes=5)  # tolerate clocks a little behind ours
PEM_END = b"-----END CERTIFICATE-----"


@dataclass(frozen=True)
class Policy:
    hosts: tuple[str, ...]  # DNS names or IP addresses the API server calls the webhook by
    validity: timedelta = timedelta(days=90)
    renew_before: timedelta = timedelta(days=30)
    ca_validity: timedelta = timedelta(days=3650)

    def problem(self) -> str | None:
        if not self.hosts:
            return "the serving certificate needs at least one host name"
        if not timedelta(0) < self.renew_before < self.validity:
            return (f"renew-before ({self.renew_before}) must be positive and shorter than the validity "
                    f"({self.validity})")
        if self.ca_validity <= self.validity:
            return f"the CA's validity ({self.ca_validity}) must be longer than the certificate's ({self.validity})"
        return None


@dataclass(frozen=True)
class Material:
    """What the TLS Secret holds: the CA bundle (newest first), the newest CA's key, the serving pair."""

    ca_certs: tuple[bytes, ...]
    ca_key: bytes
    cert: bytes
    key: bytes

    @property
    def ca_bundle(self) -> bytes:
        return b"".join(self.ca_certs)


class MaterialError(ValueError):
    """Stored material that cannot be used (unparsable, mismatched): it is replaced, and logged."""


def renew(current: Material | None, policy: Policy, now: datetime) -> Material | None:
    """New material if something is due (or `current` is None), else None.

    Raises MaterialError when `current` cannot be used; the caller then starts afresh with None.
    """
    if current is None:
        return _issue(_new_ca(now, policy.ca_validity), (), policy, now)
    validate(current)
    ca_cert, ca_key = _load_ca(current)
    live_cas = tuple(pem for pem in current.ca_certs if _not_after(pem) > now)
    if _not_after_of(ca_cert) < now + policy.validity:
        return _issue(_new_ca(now, policy.ca_validity), live_cas, policy, now)
    cert = _load_cert(current.cert)
    if (_not_after_of(cert) - now <= policy.renew_before or _hosts(cert) != frozenset(policy.hosts)
            or cert.issuer != ca_cert.subject):
        return _issue((ca_cert, ca_key), live_cas[1:], policy, now)
    if live_cas != current.ca_certs:
        return replace(current, ca_certs=live_cas)
    return None


def next_check(current: Material, policy: Policy, now: datetime) -> datetime:
    """When `renew` will next have something to do, given nothing else changes."""
    expiries = [_not_after(current.cert) - policy.renew_before,
                _not_after(current.ca_certs[0]) - policy.validity,
                *(_not_after(pem) for pem in current.ca_certs[1:])]
    return max(now, min(expiries))


def not_after(pem: bytes) -> datetime:
    """The expiry of the first certificate in `pem` (for metrics and logs)."""
    return _not_after(pem)


def validate(material: Material) -> None:
    """Raises MaterialError unless the pair matches and the CA signed the certificate."""
    cert, key = _load_cert(material.cert), _load_key(material.key)
    if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise MaterialError("the serving key does not match the serving certificate")
    ca_cert, _ = _load_ca(material)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise MaterialError(f"the serving certificate is not signed by the newest CA: {error!r}") from None


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], older_cas: tuple[bytes, ...], policy: Policy,
           now: datetime) -> Material:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [_general_name(host) for host in policy.hosts]
    builder = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, policy.hosts[0][:64])]), ca_cert.subject,
                 key.public_key(), now, policy.validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Material(ca_certs=(_pem(ca_cert), *older_cas), ca_key=_key_pem(ca_key), cert=_pem(cert),
                    key=_key_pem(key))


def _new_ca(now: datetime, validity: timedelta) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # Unique per CA (its key's identifier), so two CAs in one bundle never share a subject.
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()[:16]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"spendgate injector CA {key_id}")])
    cert = (
        _builder(name, name, key.public_key(), now, validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime,
             validity: timedelta) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - BACKDATE)
            .not_valid_after(now + validity))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _hosts(cert: x509.Certificate) -> frozenset[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset([*names.get_values_for_type(x509.DNSName),
                      *(str(ip) for ip in names.get_values_for_type(x509.IPAddress))])


def _load_ca(material: Material) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not material.ca_certs:
        raise MaterialError("no CA certificate")
    ca_cert, ca_key = _load_cert(material.ca_certs[0]), _load_key(material.ca_key)
    if ca_cert.public_key().public_bytes(*_SPKI) != ca_key.public_key().public_bytes(*_SPKI):
        raise MaterialError("the CA key does not match the newest CA certificate")
    return ca_cert, ca_key


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise MaterialError(f"not a PEM certificate: {error}") from None


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise MaterialError(f"not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MaterialError(f"expected an EC private key, got {type(key).__name__}")
    return key


def _not_after(pem: bytes) -> datetime:
    return _not_after_of(_load_cert(pem))


def _not_after_of(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def split_pems(bundle: bytes) -> tuple[bytes, ...]:
    """The certificates of a PEM bundle, one PEM each, in order."""
    parts = bundle.split(PEM_END)
    return tuple(part.strip() + b"\n" + PEM_END + b"\n" for part in parts if part.strip())
