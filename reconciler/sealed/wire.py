"""The SealedSecret value format, byte for byte as the sealed-secrets controller writes it.

A sealed value is base64 (standard alphabet, padded) of
`uint16 big-endian len(W) || W || AES-256-GCM(K, nonce=12 zero bytes, no AAD)(plaintext) || tag`
where `K` is 32 fresh random bytes per value and `W` is RSA-OAEP(SHA-256, MGF1-SHA-256) of `K`
under the label that binds the value to its scope: `namespace/name` (strict), `namespace`
(namespace-wide) or empty (cluster-wide). The zero nonce is safe only because `K` is never reused.

Pure: no I/O, no logging, no object handling. Errors carry a reason only, never bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_KEY_BYTES = 32
_NONCE = bytes(12)
_LENGTH_BYTES = 2

ANNOTATION_PREFIX = "sealedsecrets.bitnami.com/"
CLUSTER_WIDE_ANNOTATION = ANNOTATION_PREFIX + "cluster-wide"
NAMESPACE_WIDE_ANNOTATION = ANNOTATION_PREFIX + "namespace-wide"


class WireError(Exception):
    """A sealed value is malformed or does not open with this key and label."""


class Scope(enum.Enum):
    """Where a sealed value may be decrypted; named as kubeseal's `--scope` names them."""

    STRICT = "strict"
    NAMESPACE_WIDE = "namespace-wide"
    CLUSTER_WIDE = "cluster-wide"


def scope_of(annotations: Mapping[str, object]) -> Scope:
    """The scope the annotations select; the controller accepts exactly "true" and nothing else."""
    # Cluster-wide wins when both are set, as in the controller.
    if annotations.get(CLUSTER_WIDE_ANNOTATION) == "true":
        return Scope.CLUSTER_WIDE
    if annotations.get(NAMESPACE_WIDE_ANNOTATION) == "true":
        return Scope.NAMESPACE_WIDE
    return Scope.STRICT


def scope_annotations(scope: Scope) -> dict[str, str]:
    """The annotation that marks `scope` (none for strict)."""
    if scope is Scope.CLUSTER_WIDE:
        return {CLUSTER_WIDE_ANNOTATION: "true"}
    if scope is Scope.NAMESPACE_WIDE:
        return {NAMESPACE_WIDE_ANNOTATION: "true"}
    return {}


def label(scope: Scope, namespace: str, name: str) -> bytes:
    """The OAEP label that binds a value to its scope."""
    if scope is Scope.CLUSTER_WIDE:
        return b""
    if scope is Scope.NAMESPACE_WIDE:
        return namespace.encode()
    return f"{namespace}/{name}".encode()


def _oaep(label_bytes: bytes) -> padding.OAEP:
    # An empty label and no label are the same thing in OAEP; Go passes an empty slice.
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=label_bytes or None,
    )


def seal(public_key: rsa.RSAPublicKey, plaintext: bytes, label_bytes: bytes) -> bytes:
    """A framed sealed value (not yet base64) of `plaintext` for `public_key` under the label."""
    session_key = os.urandom(SESSION_KEY_BYTES)
    wrapped = public_key.encrypt(session_key, _oaep(label_bytes))
    sealed = AESGCM(session_key).encrypt(_NONCE, plaintext, None)
    return len(wrapped).to_bytes(_LENGTH_BYTES, "big") + wrapped + sealed


@dataclass(frozen=True)
class Framed:
    """A sealed value split into its RSA-wrapped session key and its AES-GCM part."""

    wrapped_key: bytes
    payload: bytes

    def fits(self, private_key: rsa.RSAPrivateKey) -> bool:
        """Whether the wrapped key could be an RSA ciphertext for this key at all.

        A cheap test (no private-key operation): the ciphertext must not be longer than the
        modulus and, read as a number, must be smaller than it. Keys of another size or of a
        smaller modulus are skipped without spending an RSA decryption on them.
        """
        numbers = private_key.public_key().public_numbers()
        size = (numbers.n.bit_length() + 7) // 8
        return len(self.wrapped_key) <= size and int.from_bytes(self.wrapped_key, "big") < numbers.n


def split(blob: bytes) -> Framed:
    """Read the length framing; `WireError` when the value is too short for what it announces."""
    if len(blob) < _LENGTH_BYTES:
        raise WireError("sealed value is too short")
    length = int.from_bytes(blob[:_LENGTH_BYTES], "big")
    end = _LENGTH_BYTES + length
    if len(blob) < end:
        raise WireError("sealed value is shorter than its length prefix says")
    return Framed(wrapped_key=blob[_LENGTH_BYTES:end], payload=blob[end:])


def unwrap(private_key: rsa.RSAPrivateKey, framed: Framed, label_bytes: bytes) -> bytes:
    """The session key, or `WireError` when this key and label do not open it (one RSA op)."""
    size = (private_key.key_size + 7) // 8
    if len(framed.wrapped_key) > size:
        raise WireError("wrapped session key is longer than the key's modulus")
    # Go accepts a ciphertext whose leading zero bytes were dropped; OpenSSL wants exactly k bytes.
    session_key = _rsa_decrypt(private_key, framed.wrapped_key.rjust(size, b"\x00"), label_bytes)
    # Raised here, outside any except block, so no library exception rides along as __context__.
    if session_key is None:
        raise WireError("no match for this key and label")
    return session_key


def open_payload(session_key: bytes, framed: Framed) -> bytes:
    """The plaintext, or `WireError` when the AES-GCM tag does not verify."""
    if len(session_key) not in (16, 24, 32):
        raise WireError("session key has an invalid length")
    plaintext = _aes_open(session_key, framed.payload)
    if plaintext is None:
        raise WireError("authentication tag does not verify (value altered or truncated)")
    return plaintext


def open_with(private_key: rsa.RSAPrivateKey, blob: bytes, label_bytes: bytes) -> bytes:
    """Decrypt one framed value with one key: the controller's per-key attempt."""
    framed = split(blob)
    return open_payload(unwrap(private_key, framed, label_bytes), framed)


def decode_text(text: str) -> bytes:
    """The framed bytes of a base64 value; line breaks are skipped as Go's decoder skips them."""
    blob = _b64decode(text.replace("\r", "").replace("\n", ""))
    if blob is None:
        raise WireError("sealed value is not valid base64")
    return blob


def _rsa_decrypt(key: rsa.RSAPrivateKey, wrapped: bytes, label_bytes: bytes) -> bytes | None:
    try:
        return key.decrypt(wrapped, _oaep(label_bytes))
    except ValueError:
        return None


def _aes_open(session_key: bytes, payload: bytes) -> bytes | None:
    try:
        return AESGCM(session_key).decrypt(_NONCE, payload, None)
    except InvalidTag:
        return None


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def encode_text(blob: bytes) -> str:
    """The base64 text kubeseal writes for a framed value."""
    return base64.b64encode(blob).decode("ascii")
