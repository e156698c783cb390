"""SSHSIG verification: algorithms, trust, namespace, windows, tampering, strict ed25519."""

from __future__ import annotations

import base64
import functools
import hashlib
import pathlib
import subprocess
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reconciler.signatures import allowed_signers, rejections, sshsig
from tests.harness import signing

MESSAGE = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nhello\n"
NOW = 1_800_000_000


@functools.cache
def _key(kind: str) -> signing.PrivateKey:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _trust(*lines: str) -> allowed_signers.AllowedSigners:
    return allowed_signers.parse("\n".join(lines), "allowed_signers")


def _verify(armored: bytes, trust: allowed_signers.AllowedSigners, message: bytes = MESSAGE) -> str:
    signer = sshsig.verify(message, armored, trust, namespace="git", times=(NOW,))
    return ",".join(signer.principals)


@pytest.mark.parametrize("kind", ["ed25519", "p256", "p384", "rsa"])
@pytest.mark.parametrize("hash_name", ["sha256", "sha512"])
def test_good_signature_by_a_trusted_key_names_its_principals(kind: str, hash_name: str) -> None:
    key = _key(kind)
    armored = signing.sshsig(key, MESSAGE, hash_name=hash_name)
    trust = _trust(f"ops@example.com,alice@example.com {signing.public_line(key)}")
    assert _verify(armored, trust) == "ops@example.com,alice@example.com"


def test_fingerprint_matches_ssh_keygen(tmp_path: pathlib.Path) -> None:
    key = _key("ed25519")
    (tmp_path / "k.pub").write_text(signing.public_line(key) + "\n")
    listing = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert listing.split()[1] == sshsig.fingerprint(signing.public_blob(key))


def test_signatures_made_here_are_accepted_by_ssh_keygen(tmp_path: pathlib.Path) -> None:
    # Keeps the in-process signer honest: the bench and these tests rely on it.
    key = _key("p384")
    (tmp_path / "allowed").write_text(f"alice@example.com {signing.public_line(key)}\n")
    (tmp_path / "sig").write_bytes(signing.sshsig(key, MESSAGE))
    done = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I",
         "alice@example.com", "-n", "git", "-s", str(tmp_path / "sig")],
        input=MESSAGE, capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_one_changed_byte_is_a_bad_signature() -> None:
    key = _key("ed25519")
    armored = signing.sshsig(key, MESSAGE)
    with pytest.raises(rejections.SignatureRejected) as caught:
        _verify(armored, _trust(f"a@example.com {signing.public_line(key)}"), MESSAGE + b"!")
    assert caught.value.reason == rejections.BAD_SIGNATURE


def test_key_missing_from_allowed_signers_is_untrusted_before_any_crypto() -> None:
    armored = signing.sshsig(_key("ed25519"), MESSAGE)
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(rejections.SignatureRejected) as caught:
        _verify(armored, _trust(f"a@example.com {signing.public_line(other)}"))
    assert caught.value.reason == rejections.UNTRUSTED_KEY


def test_signature_for_another_namespace_is_refused() -> None:
    key = _key("ed25519")
    armored = signing.sshsig(key, MESSAGE, namespace="file")
    with pytest.raises(rejections.SignatureRejected) as caught:
        _verify(armored, _trust(f"a@example.com {signing.public_line(key)}"))
    assert caught.value.reason == rejections.WRONG_NAMESPACE


def test_entry_restricted_to_other_namespaces_is_refused() -> None:
    key = _key("ed25519")
    trust = _trust(f'a@example.com namespaces="file" {signing.public_line(key)}')
    with pytest.raises(rejections.SignatureRejected) as caught:
        _verify(signing.sshsig(key, MESSAGE), trust)
    assert caught.value.reason == rejections.WRONG_NAMESPACE


def test_every_given_time_must_be_inside_the_window() -> None:
    key = _key("ed25519")
    trust = _trust(f'a@example.com valid-before="20200101Z" {signing.public_line(key)}')
    armored = signing.sshsig(key, MESSAGE)
    back_dated = 1_500_000_000
    signer = sshsig.verify(MESSAGE, armored, trust, namespace="git", times=(back_dated,))
    assert signer.principals == ("a@example.com",)
    with pytest.raises(rejections.SignatureRejected) as caught:
        sshsig.verify(MESSAGE, armored, trust, namespace="git", times=(back_dated, NOW))
    assert caught.value.reason == rejections.KEY_NOT_VALID_AT_TIME


def test_second_entry_for_the_same_key_can_supply_the_valid_window() -> None:
    key = _key("ed25519")
    line = signing.public_line(key)
    trust = _trust(f'old@example.com valid-before="20200101Z" {line}', f"new@example.com {line}")
    assert _verify(signing.sshsig(key, MESSAGE), trust) == "new@example.com"


def _rewrap(armored: bytes, mutate: bytes) -> bytes:
    lines = armored.strip().split(b"\n")
    blob = base64.b64decode(b"".join(lines[1:-1])) + mutate
    return lines[0] + b"\n" + base64.b64encode(blob) + b"\n" + lines[-1] + b"\n"


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda a: _rewrap(a, b"\x00"), "trailing data"),
        (lambda a: a + a, "not exactly one"),
        (lambda a: b"junk\n" + a, "data outside"),
        (lambda a: a.replace(b"SSH SIGNATURE-----\n", b"SSH SIGNATURE-----\n!", 1), "base64"),
        (lambda a: a[:40] + a[-30:], "truncated|base64"),
    ],
)
def test_malformed_armor_is_reported_as_malformed(make: Callable[[bytes], bytes], why: str) -> None:
    key = _key("ed25519")
    trust = _trust(f"a@example.com {signing.public_line(key)}")
    with pytest.raises(rejections.SignatureRejected, match=why) as caught:
        _verify(make(signing.sshsig(key, MESSAGE)), trust)
    assert caught.value.reason == rejections.MALFORMED_SIGNATURE


_ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def _ed25519_sshsig(
    key: ed25519.Ed25519PrivateKey, raw_signature: Callable[[bytes], bytes]
) -> bytes:
    """An SSHSIG over MESSAGE whose ed25519 signature bytes `raw_signature` may change."""

    def string(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    digest = hashlib.sha512(MESSAGE).digest()
    to_sign = b"SSHSIG" + string(b"git") + string(b"") + string(b"sha512") + string(digest)
    signature = string(b"ssh-ed25519") + string(raw_signature(key.sign(to_sign)))
    blob = (b"SSHSIG" + (1).to_bytes(4, "big") + string(signing.public_blob(key)) + string(b"git")
            + string(b"") + string(b"sha512") + string(signature))  # fmt: skip
    return (
        b"-----BEGIN SSH SIGNATURE-----\n"
        + base64.b64encode(blob)
        + (b"\n-----END SSH SIGNATURE-----\n")
    )


def _non_canonical(signature: bytes) -> bytes:
    """The same signature with s + L in place of s: OpenSSH's ref10 code would accept it."""
    s = int.from_bytes(signature[32:], "little") + _ED25519_ORDER
    return signature[:32] + s.to_bytes(32, "little")


@pytest.mark.parametrize(
    "change",
    [lambda sig: sig[:63], lambda sig: sig + b"\0", _non_canonical],
    ids=["short", "long", "non-canonical-s"],
)
def test_ed25519_signatures_of_the_wrong_length_or_non_canonical_are_bad(
    change: Callable[[bytes], bytes],
) -> None:
    key = _key("ed25519")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    trust = _trust(f"a@example.com {signing.public_line(key)}")
    # The same construction, unchanged, verifies: only the change makes it bad.
    assert _verify(_ed25519_sshsig(key, lambda sig: sig), trust) == "a@example.com"
    with pytest.raises(rejections.SignatureRejected) as caught:
        _verify(_ed25519_sshsig(key, change), trust)
    assert caught.value.reason == rejections.BAD_SIGNATURE


def test_a_non_canonical_ed25519_signature_is_refused_where_ssh_keygen_accepts_it(
    tmp_path: pathlib.Path,
) -> None:
    # Stricter on purpose: s + L is the same signature made malleable; OpenSSH's ref10 code
    # checks only the top bits of s, libsodium refuses anything non-canonical.
    key = _key("ed25519")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    line = f"a@example.com {signing.public_line(key)}"
    (tmp_path / "allowed").write_text(line + "\n")
    (tmp_path / "sig").write_bytes(_ed25519_sshsig(key, _non_canonical))
    done = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "a@example.com",
         "-n", "git", "-s", str(tmp_path / "sig")],
        input=MESSAGE, capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with pytest.raises(rejections.SignatureRejected) as caught:
        _verify((tmp_path / "sig").read_bytes(), _trust(line))
    assert caught.value.reason == rejections.BAD_SIGNATURE
