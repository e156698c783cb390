"""Verify OpenPGP detached signatures with pysequoia against a set of armored public keys.

Owns loading certificates (a key file may hold several), mapping a signature's issuer to the
primary key or subkey that made it, and the revocation and expiry rules. It must not start `gpg`,
read repositories or put pysequoia's error text (which can carry a Rust backtrace) in messages.

Expiry semantics: Sequoia checks that the signing key was alive and not hard-revoked when the
signature was made. On top of that, a certificate revoked for any reason (hard or soft) or
expired at verification time (`now`) is refused, as `git verify-commit` with GnuPG does (R, Y).
The signature creation time is signer-asserted, so it is never the only time checked.

Certificates the backend cannot use are refused when the keyring is loaded, naming the file,
the key and why (a brainpool curve, DSA-1024, SHA-1 self-signatures): Sequoia's standard policy
and its crypto backend find no valid binding signature for them, and a trusted key that can
never verify anything is a configuration error, not a verdict to discover commit by commit.
"""

from __future__ import annotations

import dataclasses
import datetime

import pysequoia
from pysequoia import packet

from reconciler.signatures import rejections

# Curve OIDs (RFC 5639 / RFC 6637) that appear in ECDSA and ECDH key packets.
_BRAINPOOL_OIDS = {
    bytes.fromhex("2b2403030208010107"): "brainpoolP256r1",
    bytes.fromhex("2b240303020801010b"): "brainpoolP384r1",
    bytes.fromhex("2b240303020801010d"): "brainpoolP512r1",
}
_MIN_DSA_BITS = 2048


@dataclasses.dataclass(frozen=True)
class OpenPgpSigner:
    """Who signed: the certificate's primary fingerprint, the signing (sub)key and the email."""

    principal: str
    fingerprint: str
    signing_key: str


@dataclasses.dataclass(frozen=True)
class Keyring:
    """Trusted certificates, indexed by every key's fingerprint and long key id (lowercase)."""

    certs: tuple[pysequoia.Cert, ...]
    by_key: dict[str, pysequoia.Cert]


class KeyringError(ValueError):
    """A key file cannot be read as OpenPGP public keys; the message names the file."""


def load_keyring(files: tuple[tuple[str, bytes], ...]) -> Keyring:
    """Build a keyring from `(name, armored bytes)` pairs; each may hold several certificates."""
    certs: list[pysequoia.Cert] = []
    by_key: dict[str, pysequoia.Cert] = {}
    for name, data in files:
        try:
            found = pysequoia.Cert.split_bytes(data)
        except RuntimeError as exc:
            raise KeyringError(f"{name}: not an OpenPGP public key") from exc
        if not found:
            raise KeyringError(f"{name}: no OpenPGP certificate found")
        for pkt in packet.PacketPile.from_bytes(data):
            if pkt.tag in (packet.Tag.SecretKey, packet.Tag.SecretSubkey):
                # A trust directory is world-readable configuration; refuse private keys in it.
                raise KeyringError(f"{name}: holds secret key material; export public keys")
        for cert in found:
            _check_usable(name, cert)
            certs.append(cert)
            for pkt in packet.PacketPile.from_bytes(bytes(cert)):
                if pkt.fingerprint is not None:
                    by_key[pkt.fingerprint.lower()] = cert
                if pkt.key_id is not None:
                    by_key[pkt.key_id.lower()] = cert
    return Keyring(certs=tuple(certs), by_key=by_key)


def _check_usable(name: str, cert: pysequoia.Cert) -> None:
    """Refuse a certificate without a binding signature valid under the backend's policy."""
    try:
        _ = cert.user_ids, cert.expiration
    except RuntimeError as exc:
        raise KeyringError(
            f"{name}: OpenPGP key {cert.fingerprint} cannot be used: {_why_unusable(cert)}"
        ) from exc


def _why_unusable(cert: pysequoia.Cert) -> str:
    """The likeliest reason, read from the certificate's own packets (never the backend's text)."""
    primary: packet.Packet | None = None
    self_hashes = []
    for pkt in packet.PacketPile.from_bytes(bytes(cert)):
        if pkt.tag is packet.Tag.PublicKey:
            primary = pkt
        elif pkt.tag is packet.Tag.Signature and pkt.hash_algorithm is not None:
            self_hashes.append(pkt.hash_algorithm)
    if primary is not None:
        curve = _brainpool_curve(primary.body)
        if curve is not None:
            return f"the {curve} curve is not supported by the OpenPGP backend"
        bits = _dsa_bits(primary)
        if bits is not None and bits < _MIN_DSA_BITS:
            return f"DSA-{bits} keys are refused as too weak"
    if self_hashes and all(h == packet.HashAlgorithm.SHA1 for h in self_hashes):
        return "its self-signatures use SHA-1, which is refused; re-sign it with SHA-256"
    return "no valid self-signature (expired, from the future, or a weak algorithm)"


def _brainpool_curve(body: bytes) -> str | None:
    # v4 key packet: version, 4-byte creation time, algorithm, then (for EC keys) OID length + OID.
    if len(body) < 7 or body[0] != 4:
        return None
    oid = body[7 : 7 + body[6]]
    return _BRAINPOOL_OIDS.get(oid)


def _dsa_bits(key: packet.Packet) -> int | None:
    body = key.body
    if key.key_algorithm != packet.PublicKeyAlgorithm.DSA or len(body) < 8 or body[0] != 4:
        return None
    # The first MPI (the prime p) starts with its length in bits.
    return int.from_bytes(body[6:8], "big")


def verify(
    payload: bytes, armored: bytes, keyring: Keyring, *, now: datetime.datetime
) -> OpenPgpSigner:
    """Verify a detached armored signature over `payload`; raise SignatureRejected if not good."""
    try:
        sig = pysequoia.Sig.from_bytes(armored)
    except RuntimeError as exc:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, "unreadable OpenPGP signature"
        ) from (exc)
    issuer = (sig.issuer_fingerprint or sig.issuer_key_id or "").lower()
    cert = keyring.by_key.get(issuer)
    if cert is None:
        raise rejections.SignatureRejected(
            rejections.UNTRUSTED_KEY, f"OpenPGP key {issuer or '(no issuer)'} is not a trusted key"
        )
    # Trust before cryptography: a revoked or expired key is reported as such, not as a bad
    # signature (Sequoia would also refuse a hard-revoked key, without saying why).
    if cert.is_revoked:
        raise rejections.SignatureRejected(
            rejections.REVOKED_KEY, f"OpenPGP key {cert.fingerprint} is revoked"
        )
    try:
        expiration = cert.expiration
        principal = _principal(cert)
    except RuntimeError as exc:
        # load_keyring refuses such certificates; one that loses its binding signature later
        # (it was made valid only until now) is still a verdict, never a traceback.
        raise rejections.SignatureRejected(
            rejections.UNTRUSTED_KEY, f"OpenPGP key {cert.fingerprint} has no valid self-signature"
        ) from exc
    if expiration is not None and expiration <= now:
        raise rejections.SignatureRejected(
            rejections.EXPIRED_KEY,
            f"OpenPGP key {cert.fingerprint} expired at {expiration.isoformat()}",
        )
    try:
        result = pysequoia.verify(bytes=payload, store=lambda _ids: [cert], signature=sig)
    except RuntimeError as exc:
        raise rejections.SignatureRejected(
            rejections.BAD_SIGNATURE, f"signature by {cert.fingerprint} does not verify"
        ) from exc
    if not result.valid_sigs:
        raise rejections.SignatureRejected(
            rejections.BAD_SIGNATURE, f"signature by {cert.fingerprint} does not verify"
        )
    valid = result.valid_sigs[0]
    return OpenPgpSigner(
        principal=principal,
        fingerprint=str(valid.certificate),
        signing_key=str(valid.signing_key),
    )


def _principal(cert: pysequoia.Cert) -> str:
    """The email of the first valid user ID (the whole user ID when it has no email)."""
    for user_id in cert.user_ids:
        text = str(user_id)
        start, end = text.rfind("<"), text.rfind(">")
        return text[start + 1 : end] if 0 <= start < end else text
    return cert.fingerprint
