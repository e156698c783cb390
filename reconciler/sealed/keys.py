"""The sealing key ring: private keys with their certificates, the newest one, and rotation.

Owns `SealingKey` and `KeyRing` values, PEM reading and writing in the controller's formats
(PKCS#1 `RSA PRIVATE KEY` in `tls.key`, PEM `CERTIFICATE` in `tls.crt`), generating a key with a
self-signed certificate, and the rule that says when a new key is due. Pure: the time comes from
the caller's clock and storage is the cluster adapter's (`reconciler.services.kube_keys`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from reconciler import errors

DEFAULT_KEY_BITS = 4096
DEFAULT_RENEW_PERIOD = dt.timedelta(days=30)
DEFAULT_CERT_TTL = dt.timedelta(days=3650)
# Certificates are back-dated a little so that a clock slightly behind ours still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)


class KeyMaterialError(errors.Stalled):
    """A key or certificate could not be read, is not RSA, or the two do not belong together."""


class Clock(Protocol):
    """Where the current time comes from; tests pass their own."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class KeyPolicy:
    """How keys are made and renewed; the controller's defaults (`--key-renew-period` etc.)."""

    renew_period: dt.timedelta = DEFAULT_RENEW_PERIOD  # zero turns renewal off
    cert_ttl: dt.timedelta = DEFAULT_CERT_TTL
    bits: int = DEFAULT_KEY_BITS
    common_name: str = ""


@dataclass(frozen=True)
class SealingKey:
    """One RSA key pair with its certificate; `source` names where it came from, for messages."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    source: str = ""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the public key's SubjectPublicKeyInfo, hex."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        """PKCS#1 PEM, as the controller writes `tls.key`."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SealingKey(source={self.source!r}, fingerprint={self.fingerprint[:16]})"


@dataclass(frozen=True)
class KeyRing:
    """Every key that may decrypt, newest certificate first (the controller's default order)."""

    keys: tuple[SealingKey, ...] = ()

    @staticmethod
    def of(keys: Iterable[SealingKey]) -> KeyRing:
        """A ring of `keys`, ordered newest first, one entry per public key."""
        unique: dict[str, SealingKey] = {}
        for key in keys:
            unique.setdefault(key.fingerprint, key)
        ordered = sorted(unique.values(), key=lambda k: k.not_before, reverse=True)
        return KeyRing(keys=tuple(ordered))

    def newest(self) -> SealingKey:
        """The key used for sealing and served at `/v1/cert.pem`."""
        if not self.keys:
            raise KeyMaterialError("the key ring is empty: no sealing key exists yet")
        return self.keys[0]

    def by_fingerprint(self, fingerprint: str) -> SealingKey | None:
        for key in self.keys:
            if key.fingerprint == fingerprint:
                return key
        return None


def renewal_due(ring: KeyRing, now: dt.datetime, policy: KeyPolicy) -> bool:
    """Whether a new key must be made: none exists, or the newest is a whole period old."""
    if not ring.keys:
        return True
    if policy.renew_period <= dt.timedelta(0):
        return False
    return ring.newest().not_before + _CLOCK_SKEW + policy.renew_period <= now


KeyFactory = Callable[[dt.datetime, KeyPolicy], SealingKey]


def generate(now: dt.datetime, policy: KeyPolicy) -> SealingKey:
    """A new RSA key (policy.bits) with a self-signed certificate valid from `now`."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=policy.bits)
    return certify(private_key, now, policy)


def certify(private_key: rsa.RSAPrivateKey, now: dt.datetime, policy: KeyPolicy) -> SealingKey:
    """A `SealingKey` for an existing private key, with a new self-signed certificate."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, policy.common_name)] if policy.common_name else []
    )
    not_before = now - _CLOCK_SKEW
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + policy.cert_ttl)
        # kubeseal reads only the public key and the expiry; the usage says what the key is for.
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(private_key, hashes.SHA256())
    )
    return SealingKey(private_key=private_key, certificate=certificate, source="generated")


def load_private_key(pem: bytes, source: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#1 or PKCS#8, unencrypted)."""
    key = _parse_private_key(pem)
    if key is None:
        raise KeyMaterialError(f"{source}: not a readable unencrypted PEM private key")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyMaterialError(f"{source}: the private key is not RSA")
    return key


def load_certificate(pem: bytes, source: str) -> x509.Certificate:
    """The first certificate of a PEM bundle; an RSA key is required, as kubeseal requires."""
    certificate = _parse_certificate(pem)
    if certificate is None:
        raise KeyMaterialError(f"{source}: no readable PEM CERTIFICATE")
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        raise KeyMaterialError(f"{source}: the certificate's key is not RSA")
    return certificate


def from_pem(tls_key: bytes, tls_crt: bytes, source: str) -> SealingKey:
    """A `SealingKey` from a key Secret's `tls.key` and `tls.crt`; they must match."""
    private_key = load_private_key(tls_key, source)
    certificate = load_certificate(tls_crt, source)
    cert_key = certificate.public_key()
    if not (
        isinstance(cert_key, rsa.RSAPublicKey)
        and cert_key.public_numbers() == private_key.public_key().public_numbers()
    ):
        raise KeyMaterialError(f"{source}: tls.crt does not certify the key in tls.key")
    return SealingKey(private_key=private_key, certificate=certificate, source=source)


def _parse_private_key(pem: bytes) -> object | None:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None


def _parse_certificate(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        return None
