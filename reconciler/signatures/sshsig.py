"""Verify SSH signatures (OpenSSH PROTOCOL.sshsig) over a payload with libsodium and `cryptography`.

Ed25519 goes to libsodium (PyNaCl): it is about twice as fast as OpenSSL's here, and half of
a start-up range check is spent there. libsodium is also stricter than OpenSSH's ref10 code
(non-canonical and small-order points are refused), so it can only refuse more, never accept
more. ECDSA and RSA go to `cryptography`.

Owns the SSHSIG armor and wire format, the SSH public-key and signature encodings for ed25519,
ecdsa (nistp256/384/521) and rsa (rsa-sha2-256/512 only), and the trust decision against an
`allowed_signers` file. It must not read files or start `ssh-keygen`. Trust is decided before
the cryptographic check so an unknown key is reported as untrusted, not as a bad signature.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nacl import exceptions as nacl_exceptions
from nacl import signing as nacl_signing

from reconciler.signatures import allowed_signers, rejections

_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
_END = b"-----END SSH SIGNATURE-----"
_MAGIC = b"SSHSIG"
_CERT_SUFFIX = "-cert-v01@openssh.com"
_USER_CERTIFICATE = 1
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

    @property
    def public_key_type(self) -> str:
        return _Reader(self.public_key).string().decode(errors="replace")


@dataclasses.dataclass(frozen=True)
class _Certificate:
    """The parts of an OpenSSH certificate (PROTOCOL.certkeys) that trust depends on."""

    key_blob: bytes
    cert_type: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: bytes
    ca_key: bytes
    signed_part: bytes
    signature: bytes


@functools.lru_cache(maxsize=256)
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
    if envelope.public_key_type.endswith(_CERT_SUFFIX):
        certificate = _parse_certificate(envelope.public_key)
        principals = _trust_certificate(certificate, trust, namespace, times)
        signer_key = certificate.key_blob
    else:
        signer_key = envelope.public_key
        principals = _trust_key(signer_key, trust, namespace, times)
    key_fingerprint = fingerprint(signer_key)
    digest = _HASHES[envelope.hash_algorithm](payload).digest()
    signed = (
        _MAGIC
        + _string(envelope.namespace)
        + _string(envelope.reserved)
        + _string(envelope.hash_algorithm.encode())
        + _string(digest)
    )
    _check(signer_key, envelope.signature, signed, key_fingerprint)
    return SshSigner(principals=principals, fingerprint=key_fingerprint)


def _trust_key(
    key_blob: bytes, trust: allowed_signers.AllowedSigners, namespace: str, times: tuple[int, ...]
) -> tuple[str, ...]:
    """The principals of the first plain entry trusting `key_blob` for `namespace` and `times`."""
    entries = trust.for_key(key_blob)
    if not entries:
        raise rejections.SignatureRejected(
            rejections.UNTRUSTED_KEY, f"key {fingerprint(key_blob)} is not in allowed_signers"
        )
    return _narrow(entries, namespace, times, f"key {fingerprint(key_blob)}").principals


def _trust_certificate(
    cert: _Certificate,
    trust: allowed_signers.AllowedSigners,
    namespace: str,
    times: tuple[int, ...],
) -> tuple[str, ...]:
    """The certificate principals a `cert-authority` entry accepts, as `ssh-keygen -Y verify`.

    The CA must be listed, the certificate must be a user certificate signed by it, valid at
    every time, and name a principal the entry's pattern list matches. Certificates with
    critical options are refused: no option is defined for signatures, so any is unexpected.
    """
    ca = f"certificate authority {fingerprint(cert.ca_key)}"
    entries = trust.for_authority(cert.ca_key)
    if not entries:
        raise rejections.SignatureRejected(rejections.UNTRUSTED_KEY, f"{ca} is not trusted")
    if cert.cert_type != _USER_CERTIFICATE or cert.critical_options:
        raise rejections.SignatureRejected(
            rejections.UNTRUSTED_KEY, "not a user certificate without critical options"
        )
    try:
        _check(cert.ca_key, cert.signature, cert.signed_part, ca)
    except rejections.SignatureRejected as exc:
        raise rejections.SignatureRejected(
            rejections.BAD_SIGNATURE, f"certificate signature by {ca} does not verify"
        ) from exc
    if not all(cert.valid_after <= t < cert.valid_before for t in times):
        raise rejections.SignatureRejected(
            rejections.KEY_NOT_VALID_AT_TIME, "certificate is outside its validity period"
        )
    matching = [
        (
            entry,
            tuple(
                p
                for p in cert.principals
                if allowed_signers.match_pattern_list(p, entry.principals)
            ),
        )
        for entry in entries
    ]
    usable = {entry: principals for entry, principals in matching if principals}
    if not usable:
        raise rejections.SignatureRejected(
            rejections.UNTRUSTED_KEY, f"no principal of the certificate is allowed for {ca}"
        )
    return usable[_narrow(tuple(usable), namespace, times, ca)]


def _narrow(
    entries: tuple[allowed_signers.Entry, ...], namespace: str, times: tuple[int, ...], what: str
) -> allowed_signers.Entry:
    """The first entry allowing `namespace` whose window holds at every time."""
    in_namespace = [e for e in entries if e.allows_namespace(namespace)]
    if not in_namespace:
        raise rejections.SignatureRejected(
            rejections.WRONG_NAMESPACE, f"{what} is not allowed for namespace {namespace!r}"
        )
    in_window = [e for e in in_namespace if all(e.valid_at(t) for t in times)]
    if not in_window:
        raise rejections.SignatureRejected(
            rejections.KEY_NOT_VALID_AT_TIME,
            f"{what} is outside its allowed_signers validity window",
        )
    return in_window[0]


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

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def uint32(self) -> int:
        return int.from_bytes(self.raw(4), "big")

    def uint64(self) -> int:
        return int.from_bytes(self.raw(8), "big")

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


def _parse_certificate(blob: bytes) -> _Certificate:
    reader = _Reader(blob)
    plain_type = reader.string().decode(errors="replace").removesuffix(_CERT_SUFFIX)
    reader.string()  # nonce
    key_start = reader.offset
    fields = {"ssh-ed25519": 1, "ssh-rsa": 2}.get(plain_type, 2 if "ecdsa" in plain_type else 0)
    if not fields:
        raise rejections.SignatureRejected(
            rejections.UNSUPPORTED_SIGNATURE, f"certificate key type {plain_type!r}"
        )
    for _ in range(fields):
        reader.string()  # ed25519 key; ecdsa curve and point; rsa e and n (mpints)
    key_blob = _string(plain_type.encode()) + blob[key_start : reader.offset]
    reader.uint64()  # serial
    cert_type = reader.uint32()
    reader.string()  # key id
    principals_reader = _Reader(reader.string())
    principals = []
    while principals_reader.remaining:
        principals.append(principals_reader.string().decode(errors="replace"))
    valid_after, valid_before = reader.uint64(), reader.uint64()
    critical_options = reader.string()
    reader.string()  # extensions
    reader.string()  # reserved
    ca_key = reader.string()
    signed_part = blob[: reader.offset]
    signature = reader.string()
    reader.finish()
    return _Certificate(
        key_blob, cert_type, tuple(principals), valid_after, valid_before, critical_options,
        ca_key, signed_part, signature,
    )  # fmt: skip


_ED25519_SIGNATURE_BYTES = 64
_PublicKey = nacl_signing.VerifyKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@functools.lru_cache(maxsize=256)
def _public_key(key_blob: bytes) -> tuple[str, _PublicKey | None, hashes.HashAlgorithm | None]:
    """The key type and loaded key of an SSH public key blob (None for an unsupported type).

    Cached: a range is signed by a handful of keys, and loading one (an RSA key above all)
    costs as much as a verification. Only the blob's own bytes decide the result.
    """
    key = _Reader(key_blob)
    key_type = key.string().decode(errors="replace")
    public: _PublicKey | None = None
    digest: hashes.HashAlgorithm | None = None
    if key_type == "ssh-ed25519":
        public = nacl_signing.VerifyKey(key.string())
    elif key_type.startswith("ecdsa-sha2-"):
        curve, digest = _CURVES[key.string().decode(errors="replace")]
        public = ec.EllipticCurvePublicKey.from_encoded_point(curve, key.string())
    elif key_type == "ssh-rsa":
        exponent, modulus = key.mpint(), key.mpint()
        public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    else:
        return key_type, None, None
    key.finish()
    return key_type, public, digest


def _verify_ed25519(public: nacl_signing.VerifyKey, signature: bytes, signed: bytes) -> None:
    # libsodium reports a signature of the wrong length as a ValueError; it is a bad signature
    # like any other, as it was with OpenSSL.
    if len(signature) != _ED25519_SIGNATURE_BYTES:
        raise InvalidSignature
    public.verify(signed, signature)


def _check(key_blob: bytes, signature_blob: bytes, signed: bytes, key_fingerprint: str) -> None:
    sig = _Reader(signature_blob)
    sig_type = sig.string().decode(errors="replace")
    raw_sig = sig.string()
    sig.finish()
    key_type = _Reader(key_blob).string().decode(errors="replace")
    try:
        _type, public, digest = _public_key(key_blob)
        if isinstance(public, nacl_signing.VerifyKey) and sig_type == key_type:
            _verify_ed25519(public, raw_sig, signed)
        elif isinstance(public, ec.EllipticCurvePublicKey) and digest and sig_type == key_type:
            parts = _Reader(raw_sig)
            r, s = parts.mpint(), parts.mpint()
            parts.finish()
            public.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))
        elif isinstance(public, rsa.RSAPublicKey) and sig_type in _RSA_HASHES:
            public.verify(raw_sig, signed, padding.PKCS1v15(), _RSA_HASHES[sig_type])
        else:
            # Includes plain `ssh-rsa` (SHA-1) signatures, which OpenSSH refuses for SSHSIG too.
            raise rejections.SignatureRejected(
                rejections.UNSUPPORTED_SIGNATURE,
                f"key type {key_type!r} with signature {sig_type!r}",
            )
    except (InvalidSignature, nacl_exceptions.BadSignatureError) as exc:
        raise rejections.SignatureRejected(
            rejections.BAD_SIGNATURE, f"signature by {key_fingerprint} does not verify"
        ) from exc
    except (KeyError, ValueError) as exc:
        raise rejections.SignatureRejected(
            rejections.MALFORMED_SIGNATURE, f"unusable public key {key_type!r}"
        ) from exc
