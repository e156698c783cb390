"""The key ring: order, PEM formats of the controller's Secrets, generation and renewal."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.sealed import keys
from tests import sealed_keys


def test_ring_is_newest_first_and_one_entry_per_key() -> None:
    old, new = sealed_keys.sealing_key(index=0), sealed_keys.sealing_key(index=1)
    again = keys.certify(old.private_key, sealed_keys.EPOCH, keys.KeyPolicy())
    ring = keys.KeyRing.of([old, new, again])
    assert [k.fingerprint for k in ring.keys] == [new.fingerprint, old.fingerprint]
    assert ring.newest() is new
    assert ring.by_fingerprint(old.fingerprint) is old
    assert ring.by_fingerprint("nope") is None


def test_empty_ring_has_no_newest_key() -> None:
    with pytest.raises(keys.KeyMaterialError, match="empty"):
        keys.KeyRing().newest()


def test_renewal_due_when_empty_or_a_period_old() -> None:
    policy = keys.KeyPolicy(renew_period=dt.timedelta(days=30))
    ring = keys.KeyRing.of([sealed_keys.sealing_key(index=0)])
    start = sealed_keys.EPOCH
    assert keys.renewal_due(keys.KeyRing(), start, policy)
    assert not keys.renewal_due(ring, start + dt.timedelta(days=29), policy)
    assert keys.renewal_due(ring, start + dt.timedelta(days=30, minutes=1), policy)
    off = keys.KeyPolicy(renew_period=dt.timedelta(0))
    assert not keys.renewal_due(ring, start + dt.timedelta(days=3000), off)
    assert keys.renewal_due(keys.KeyRing(), start, off)


def test_pem_round_trip_in_the_controllers_formats() -> None:
    key = sealed_keys.sealing_key(index=0)
    assert key.private_key_pem().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert key.certificate_pem().startswith(b"-----BEGIN CERTIFICATE-----")
    loaded = keys.from_pem(key.private_key_pem(), key.certificate_pem(), "test")
    assert loaded.fingerprint == key.fingerprint
    pkcs8 = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert keys.from_pem(pkcs8, key.certificate_pem(), "test").fingerprint == key.fingerprint


def test_mismatched_or_foreign_key_material_is_refused() -> None:
    one, two = sealed_keys.sealing_key(index=0), sealed_keys.sealing_key(index=1)
    with pytest.raises(keys.KeyMaterialError, match="does not certify"):
        keys.from_pem(one.private_key_pem(), two.certificate_pem(), "Secret ns/k")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(keys.KeyMaterialError, match="not RSA"):
        keys.load_private_key(ec_pem, "ec")
    with pytest.raises(keys.KeyMaterialError, match="Secret ns/x: not a readable"):
        keys.load_private_key(b"garbage", "Secret ns/x")
    with pytest.raises(keys.KeyMaterialError, match="no readable PEM CERTIFICATE"):
        keys.load_certificate(b"garbage", "c")


def test_generated_key_has_a_certificate_valid_from_now() -> None:
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    key = keys.generate(now, keys.KeyPolicy(bits=2048, common_name="gitwarden"))
    assert key.private_key.key_size == 2048
    assert key.not_before <= now < key.certificate.not_valid_after_utc
    assert key.certificate.not_valid_after_utc - now > dt.timedelta(days=3600)
    assert "gitwarden" in key.certificate.subject.rfc4514_string()


def test_repr_shows_no_key_material() -> None:
    key = sealed_keys.sealing_key(index=0)
    shown = repr(key)
    assert "PRIVATE" not in shown
    assert str(key.private_key.private_numbers().d)[:20] not in shown
