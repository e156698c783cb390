"""The decrypt stage: SealedSecrets become Secrets, any failure rejects the revision, and
remembered keys keep the RSA work at one operation per value."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from reconciler import decrypt, manifests
from reconciler.sealed import errors, objects
from tests import revisions, sealed_keys

NOW = sealed_keys.EPOCH + dt.timedelta(days=100)


def sealed_manifest(name: str, index: int = 0, bits: int = 2048, values: int = 2) -> Any:
    body = objects.seal(
        {
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "app"},
            "stringData": {f"k{i}": f"value-{i}" for i in range(values)},
        },
        sealed_keys.sealing_key(bits, index).certificate,
        NOW,
    )
    return manifests.Manifest.of(f"apps/{name}.yaml#0", body)


CONFIG = manifests.Manifest.of(
    "apps/cm.yaml#0",
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "app"}},
)


def test_sealed_secrets_become_secrets_and_the_rest_passes() -> None:
    loaded = manifests.Manifests(revisions.verified("abc123"), (CONFIG, sealed_manifest("one")))
    result = decrypt.run(loaded, sealed_keys.ring(0))
    assert result.revision == "abc123"
    assert result.manifests == (CONFIG,)
    [secret] = result.secrets
    assert (secret.name, secret.source) == ("one", "apps/one.yaml#0")
    assert secret.data["k1"].reveal() == b"value-1"


def test_any_failure_rejects_the_revision_naming_every_object() -> None:
    loaded = manifests.Manifests(
        revisions.verified("abc123"),
        (sealed_manifest("good"), sealed_manifest("bad1", 1), sealed_manifest("bad2", 2)),
    )
    with pytest.raises(errors.RevisionRejected) as info:
        decrypt.run(loaded, sealed_keys.ring(0))
    assert [p.obj for p in info.value.problems] == ["app/bad1", "app/bad2"]
    assert "revision abc123 rejected: 2 SealedSecret(s) failed" in str(info.value)
    assert "app/bad1: k0: no key could decrypt" in str(info.value)
    # Each names the file it sits in, so a copied SealedSecret is found in Git.
    assert [p.source for p in info.value.problems] == ["apps/bad1.yaml#0", "apps/bad2.yaml#0"]
    assert "(in apps/bad1.yaml#0)" in str(info.value)


def test_a_sealed_secret_cannot_reach_the_next_stage() -> None:
    with pytest.raises(ValueError, match="cannot pass the decrypt stage"):
        manifests.DecryptedManifests(
            revisions.verified("r"), (sealed_manifest("x"),), (), manifests.KeyHints(), 0
        )
    # Unknown versions of the kind are refused by the stage, never passed through.
    odd = sealed_manifest("odd")
    odd = manifests.Manifest.of(odd.source, {**manifests.thaw(odd.body), "apiVersion": "x/v2"})
    with pytest.raises(errors.RevisionRejected, match="unsupported apiVersion"):
        decrypt.run(manifests.Manifests(revisions.verified("r"), (odd,)), sealed_keys.ring(0))


def test_remembered_keys_cost_one_rsa_operation_per_value() -> None:
    # Five keys, newest first; every object was sealed with the oldest one.
    ring = sealed_keys.ring(0, 1, 2, 3, 4)
    loaded = manifests.Manifests(
        revisions.verified("r1"), tuple(sealed_manifest(f"s{i}", 0, values=3) for i in range(4))
    )
    first = decrypt.run(loaded, ring)
    # Only the first value may pay for the four newer keys (fewer when a key's modulus is
    # smaller than the wrapped key, which is skipped for free); every later value is opened by
    # the first key tried: the one that opened the previous value or another of its object.
    assert 4 * 3 <= first.rsa_operations <= 4 + 4 * 3
    second = decrypt.run(
        manifests.Manifests(revisions.verified("r2"), loaded.items), ring, first.key_hints
    )
    assert second.rsa_operations == 4 * 3
    assert len(second.key_hints.by_value) == 12


def test_keys_whose_size_cannot_fit_are_skipped_without_rsa() -> None:
    ring = sealed_keys.ring(0, 1, 2)  # 2048-bit keys, newer than the 4096-bit one below
    ring = ring.of([*ring.keys, sealed_keys.sealing_key(4096, 0, days=-10)])
    loaded = manifests.Manifests(
        revisions.verified("r"), (sealed_manifest("big", 0, bits=4096, values=1),)
    )
    assert decrypt.run(loaded, ring).rsa_operations == 1
