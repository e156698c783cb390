"""Verify SSH signatures (OpenSSH PROTOCOL.sshsig) over a payload with `cryptography`.

Owns the SSHSIG armor and wire format, the SSH public-key and signature encodings for ed25519,
ecdsa (nistp256/384/521) and rsa (rsa-sha2-256/512 only), and the trust decision against an
`allowed_signers` file. It must not read files or start `ssh-keygen`. Trust is decided before
the cryptographic check so an unknown key is reported as untrusted, not as a bad signature.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from reconciler.signatures import allowed_signers, rejections

_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
_END = b"-----END SSH SIGNATURE-----"
_MAGIC = b"SSHSIG"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}


@dataclasses.dataclass(frozen=True)
class SshSigner:
    """Who signed: the principals of the allowed_signers entry and the key's fingerprint."""

    principals: tuple[str, ...]
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class _Envelope:
    public_key: bytes
    namespace: bytes
    reserved: bytes
    hash_algorithm: str
    signature: bytes


def fingerprint(key_blob: bytes) -> str:
    """The `SHA256:...` fingerprint ssh-keygen prints for a public key blob."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).rstrip(b"=")
    return "SHA256:" + digest.decode()


def verify(
    payload: bytes,
    armored: bytes,
    trust: allowed_signers.AllowedSigners,
    *,
    namespace: str,
    times: tuple[int, ...],
) -> SshSigner:
    """Verify `armored` over `payload`; the key must be trusted for `namespace` at every time.

    `times` are the moments (epoch seconds) at which the allowed_signers window must hold; the
    caller chooses them (git uses only the committer date).
    """
    envelope = _parse_envelope(_dearmor(armored))
    if envelope.namespace != namespace.encode():
        raise rejections.SignatureRejected(
            rejections.WRONG_NAMESPACE,
            f"signed for namespace {envelope.namespace.decode(errors='replace')!r},"
            f" expected {namespace!r}",
        )
    key_fingerprint = fingerprint(envelope.public_key)
    entries = trust.for_key(envelope.public_key)
    if not entries:
        if b"-cert-v01@openssh.com" in envelope.public_key[:64]:
            # cert-authority trust needs OpenSSH certificate parsing, which is not built yet;
            # refusing is the safe answer until it is.
            raise rejections.SignatureRejected(
                rejections.UNTRUSTED_KEY, "signatures by OpenSSH certificates are not supported"
            )
        raise rejections.SignatureRejected(
            rejections.UNTRUSTED_KEY, f"key {key_fingerprint} is not in allowed_signers"
        )
    in_namespace = [e for e in entries if e.allows_namespace(namespace)]
    if not in_namespace:
        raise rejections.SignatureRejected(
            rejections.WRONG_NAMESPACE,
            f"key {key_fingerprint} is not allowed for namespace {namespace!r}",
        )
    in_window = [e for e in in_namespace if all(e.valid_at(t) for t in times)]
    if not in_window:
        raise rejections.SignatureRejected(
            rejections.KEY_NOT_VALID_AT_TIME,
            f"key {key_fingerprint} is outside its allowed_signers validity window",
        )
    digest = _HASHES[envelope.hash_algorithm](payload).digest()
    signed = (
        _MAGIC
        + _string(envelope.namespace)
        + _string(envelope.reserved)
        + _string(envelope.hash_algorithm.encode())
        + _string(digest)
    )
    _check(envelope.public_key, envelope.signature, signed, key_fingerprint)
    return SshSigner(principals=in_window[0].principals, fingerprint=key_fingerprint)


def _dearmor(armored: bytes) -> bytes:
    text = armored.strip()
    if text.count(_BEGIN) != 1 or text.count(_END) != 1:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, "not exactly one SSH signature armor"
        )
    if not text.startswith(_BEGIN) or not text.endswith(_END):
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, "data outside the SSH signature armor"
        )
    body = text[len(_BEGIN) : -len(_END)]
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, "armor is not valid base64"
        ) from exc


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def raw(self, size: int) -> bytes:
        if self._offset + size > len(self._data):
            raise rejections.SignatureRejected(rejections.MALFORMED_SIGNATURE, "truncated data")
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def uint32(self) -> int:
        return int.from_bytes(self.raw(4), "big")

    def string(self) -> bytes:
        return self.raw(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise rejections.SignatureRejected(rejections.MALFORMED_SIGNATURE, "trailing data")


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _parse_envelope(blob: bytes) -> _Envelope:
    reader = _Reader(blob)
    if reader.raw(6) != _MAGIC:
        raise rejections.SignatureRejected(rejections.MALFORMED_SIGNATURE, "missing SSHSIG magic")
    version = reader.uint32()
    if version != 1:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, f"unsupported SSHSIG version {version}"
        )
    envelope = _Envelope(
        public_key=reader.string(),
        namespace=reader.string(),
        reserved=reader.string(),
        hash_algorithm=reader.string().decode(errors="replace"),
        signature=reader.string(),
    )
    reader.finish()
    if envelope.hash_algorithm not in _HASHES:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE,
            f"unsupported hash algorithm {envelope.hash_algorithm!r}",
        )
    return envelope


def _check(key_blob: bytes, signature_blob: bytes, signed: bytes, key_fingerprint: str) -> None:
    key = _Reader(key_blob)
    key_type = key.string().decode(errors="replace")
    sig = _Reader(signature_blob)
    sig_type = sig.string().decode(errors="replace")
    raw_sig = sig.string()
    sig.finish()
    bad = rejections.SignatureRejected(
        rejections.BAD_SIGNATURE, f"signature by {key_fingerprint} does not verify"
    )
    try:
        if key_type == "ssh-ed25519" and sig_type == key_type:
            public = ed25519.Ed25519PublicKey.from_public_bytes(key.string())
            key.finish()
            public.verify(raw_sig, signed)
        elif key_type.startswith("ecdsa-sha2-") and sig_type == key_type:
            curve, digest = _CURVES[key.string().decode(errors="replace")]
            point = key.string()
            key.finish()
            ec_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            parts = _Reader(raw_sig)
            r, s = parts.mpint(), parts.mpint()
            parts.finish()
            ec_key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))
        elif key_type == "ssh-rsa" and sig_type in _RSA_HASHES:
            exponent, modulus = key.mpint(), key.mpint()
            key.finish()
            rsa_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
            rsa_key.verify(raw_sig, signed, padding.PKCS1v15(), _RSA_HASHES[sig_type])
        else:
            # Includes plain `ssh-rsa` (SHA-1) signatures, which OpenSSH refuses for SSHSIG too.
            raise rejections.SignatureRejected(
                rejections.UNSUPPORTED_SIGNATURE,
                f"key type {key_type!r} with signature {sig_type!r}",
            )
    except InvalidSignature as exc:
        raise bad from exc
    except (KeyError, ValueError) as exc:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, f"unusable public key {key_type!r}"
        ) from exc
