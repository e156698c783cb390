"""Make SSHSIG signatures and signed commit objects in process, for unit tests and the bench.

Owns SSHSIG *signing* with `cryptography` keys and inserting a signature into a raw commit as
git does (a `gpgsig` header before the first blank line, continuation lines prefixed by one
space). Production code never signs; this exists so tests and the bench can build many signed
objects quickly. Outputs are checked against `ssh-keygen`/`git verify-commit` in the tests.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_EC_NAMES = {"secp256r1": ("nistp256", hashes.SHA256()), "secp384r1": ("nistp384", hashes.SHA384())}


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return _string(raw)


def public_line(key: PrivateKey) -> str:
    """`<type> <base64>` as in an allowed_signers or .pub file."""
    text = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return text.decode()


def public_blob(key: PrivateKey) -> bytes:
    """The SSH wire encoding of the public key."""
    return base64.b64decode(public_line(key).split()[1])


def _raw_signature(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _string(b"ssh-ed25519") + _string(key.sign(data))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        name, digest = _EC_NAMES[key.curve.name]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return _string(f"ecdsa-sha2-{name}".encode()) + _string(_mpint(r) + _mpint(s))
    return _string(b"rsa-sha2-512") + _string(key.sign(data, PKCS1v15(), hashes.SHA512()))


def sshsig(
    key: PrivateKey, message: bytes, *, namespace: str = "git", hash_name: str = "sha512"
) -> bytes:
    """An armored SSHSIG signature of `message`, like `ssh-keygen -Y sign -n <namespace>`."""
    digest = hashlib.new(hash_name, message).digest()
    to_sign = (
        b"SSHSIG" + _string(namespace.encode()) + _string(b"") + _string(hash_name.encode())
        + _string(digest)
    )  # fmt: skip
    blob = (
        b"SSHSIG" + (1).to_bytes(4, "big") + _string(public_blob(key)) + _string(namespace.encode())
        + _string(b"") + _string(hash_name.encode()) + _string(_raw_signature(key, to_sign))
    )  # fmt: skip
    encoded = base64.b64encode(blob).decode()
    lines = [encoded[i : i + 70] for i in range(0, len(encoded), 70)]
    armored = "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines)
    return (armored + "\n-----END SSH SIGNATURE-----\n").encode()


def insert_signature(payload: bytes, signature: bytes) -> bytes:
    """The raw commit git writes for `payload` signed with `signature`."""
    header = b"gpgsig " + signature.rstrip(b"\n").replace(b"\n", b"\n ") + b"\n"
    position = payload.index(b"\n\n") + 1
    return payload[:position] + header + payload[position:]
