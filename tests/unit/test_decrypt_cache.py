"""The decrypt stage's in-process cache: a pass over unchanged SealedSecrets costs no RSA work,
and the digest planned for a Secret is of the sealed body, never of the plaintext."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from reconciler import decrypt, manifests
from reconciler.sealed import errors, objects
from tests import revisions, sealed_keys

NOW = sealed_keys.EPOCH + dt.timedelta(days=100)


def sealed(name: str, index: int = 0, value: str = "v") -> manifests.Manifest:
    body = objects.seal(
        {"kind": "Secret", "metadata": {"name": name, "namespace": "app"},
         "stringData": {"a": value + "-a", "b": value + "-b"}},
        sealed_keys.sealing_key(2048, index).certificate,
        NOW,
    )  # fmt: skip
    return manifests.Manifest.of(f"apps/{name}.yaml", body)


def loaded(*items: manifests.Manifest) -> manifests.Manifests:
    return manifests.Manifests(revisions.verified("r"), items)


def test_a_second_pass_over_unchanged_sealed_secrets_does_no_rsa_operation() -> None:
    ring = sealed_keys.ring(0, 1)
    cache = decrypt.OpenedCache()
    items = loaded(*(sealed(f"s{i}") for i in range(5)))
    first = decrypt.run(items, ring, decrypt.NO_HINTS, cache)
    assert first.rsa_operations >= 10
    assert len(cache) == 10
    second = decrypt.run(items, ring, first.key_hints, cache)
    assert second.rsa_operations == 0
    assert [s.data["a"].reveal() for s in second.secrets] == [b"v-a"] * 5


def test_only_changed_values_cost_rsa_work_and_gone_values_are_forgotten() -> None:
    ring = sealed_keys.ring(0)
    cache = decrypt.OpenedCache()
    first = decrypt.run(loaded(sealed("one"), sealed("two")), ring, decrypt.NO_HINTS, cache)
    second = decrypt.run(loaded(sealed("one", value="new")), ring, first.key_hints, cache)
    # Resealing produces new ciphertext: both values of "one" are new, "two" left Git.
    assert second.rsa_operations == 2
    assert len(cache) == 2


def test_a_key_taken_out_of_the_ring_no_longer_opens_cached_values() -> None:
    cache = decrypt.OpenedCache()
    items = loaded(sealed("one", index=1))
    decrypt.run(items, sealed_keys.ring(0, 1), decrypt.NO_HINTS, cache)
    with pytest.raises(errors.RevisionRejected, match="no key could decrypt"):
        decrypt.run(items, sealed_keys.ring(0), decrypt.NO_HINTS, cache)


def test_the_secret_digest_is_of_the_sealed_body_not_the_values() -> None:
    item = sealed("one")
    [opened] = decrypt.run(loaded(item), sealed_keys.ring(0)).secrets
    assert opened.sealed_digest == manifests.digest(item.body)
    for value in (b"v-a", b"v-b"):
        assert hashlib.sha256(value).hexdigest() != opened.sealed_digest
    assert "v-a" not in repr(decrypt.OpenedCache())
    assert "SecretValue" not in str(opened.sealed_digest)


def test_the_cache_never_prints_values() -> None:
    cache = decrypt.OpenedCache()
    decrypt.run(loaded(sealed("one")), sealed_keys.ring(0), decrypt.NO_HINTS, cache)
    assert repr(cache) == "OpenedCache(2 values)"


def test_a_cached_value_copied_under_another_name_does_not_open() -> None:
    # The cache is filed under the label too: ciphertext sealed for app/one, pasted into a
    # SealedSecret named two, must fail as it would without the cache (strict scope).
    ring = sealed_keys.ring(0)
    cache = decrypt.OpenedCache()
    one = sealed("one")
    decrypt.run(loaded(one), ring, decrypt.NO_HINTS, cache)
    body = manifests.thaw(one.body)
    body["metadata"]["name"] = "two"
    moved = manifests.Manifest.of("apps/two.yaml", body)
    with pytest.raises(errors.RevisionRejected, match="app/two"):
        decrypt.run(loaded(one, moved), ring, decrypt.NO_HINTS, cache)
