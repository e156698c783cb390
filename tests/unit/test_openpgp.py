"""OpenPGP verification with pysequoia: keyrings, subkeys, unknown issuers, tampering, revoking."""

from __future__ import annotations

import datetime

import pysequoia
import pytest

from reconciler.signatures import openpgp, rejections

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
PAYLOAD = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nhello\n"


@pytest.fixture(scope="module")
def tsk() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("Pat <pat@example.com>")


def _keyring(*certs: pysequoia.Cert) -> openpgp.Keyring:
    return openpgp.load_keyring((("keys.asc", b"".join(str(c).encode() for c in certs)),))


def _sign(tsk: pysequoia.Tsk, payload: bytes = PAYLOAD) -> bytes:
    return pysequoia.sign(tsk.signer(), payload, mode=pysequoia.SignatureMode.DETACHED)


def test_subkey_signature_reports_the_primary_fingerprint_and_email(tsk: pysequoia.Tsk) -> None:
    cert = tsk.extract_certificate()
    signer = openpgp.verify(PAYLOAD, _sign(tsk), _keyring(cert), now=NOW)
    assert signer.fingerprint == cert.fingerprint
    assert signer.signing_key != cert.fingerprint
    assert signer.principal == "pat@example.com"


def test_one_file_may_hold_several_certificates(tsk: pysequoia.Tsk) -> None:
    other = pysequoia.Tsk.generate("Quinn <quinn@example.com>").extract_certificate()
    keyring = _keyring(other, tsk.extract_certificate())
    assert len(keyring.certs) == 2
    assert openpgp.verify(PAYLOAD, _sign(tsk), keyring, now=NOW).principal == "pat@example.com"


def test_signature_by_a_key_outside_the_keyring_is_untrusted(tsk: pysequoia.Tsk) -> None:
    other = pysequoia.Tsk.generate("Quinn <quinn@example.com>").extract_certificate()
    with pytest.raises(rejections.SignatureRejected) as caught:
        openpgp.verify(PAYLOAD, _sign(tsk), _keyring(other), now=NOW)
    assert caught.value.reason == rejections.UNTRUSTED_KEY


def test_changed_payload_is_a_bad_signature(tsk: pysequoia.Tsk) -> None:
    with pytest.raises(rejections.SignatureRejected) as caught:
        openpgp.verify(PAYLOAD + b" ", _sign(tsk), _keyring(tsk.extract_certificate()), now=NOW)
    assert caught.value.reason == rejections.BAD_SIGNATURE
    assert "Rust" not in caught.value.detail


def test_revoked_certificate_is_refused_even_for_an_older_signature() -> None:
    tsk = pysequoia.Tsk.generate("Rae <rae@example.com>")
    signature = _sign(tsk)
    cert = tsk.extract_certificate()
    revoked = pysequoia.Cert.from_bytes(bytes(cert) + bytes(cert.revoke(tsk.certifier())))
    with pytest.raises(rejections.SignatureRejected) as caught:
        openpgp.verify(PAYLOAD, signature, _keyring(revoked), now=NOW)
    assert caught.value.reason == rejections.REVOKED_KEY


def test_unreadable_signature_is_malformed(tsk: pysequoia.Tsk) -> None:
    armored = b"-----BEGIN PGP SIGNATURE-----\n\nnot base64 !\n-----END PGP SIGNATURE-----\n"
    with pytest.raises(rejections.SignatureRejected) as caught:
        openpgp.verify(PAYLOAD, armored, _keyring(tsk.extract_certificate()), now=NOW)
    assert caught.value.reason == rejections.MALFORMED_SIGNATURE


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not a key at all", "not an OpenPGP public key|no OpenPGP certificate"),
        (b"", "no OpenPGP"),
    ],
)
def test_unusable_key_file_is_an_error_naming_the_file(data: bytes, why: str) -> None:
    with pytest.raises(openpgp.KeyringError, match=f"^team.asc: ({why})"):
        openpgp.load_keyring((("team.asc", data),))


def test_key_file_with_secret_material_is_refused(tsk: pysequoia.Tsk) -> None:
    with pytest.raises(openpgp.KeyringError, match="secret key material"):
        openpgp.load_keyring((("team.asc", str(tsk).encode()),))
