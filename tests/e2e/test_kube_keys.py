"""Sealing keys in a real API server: read as the controller stores them, made and renewed."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from kubernetes import client as k8s

from reconciler import cluster, config, wiring
from reconciler.sealed import keys
from reconciler.services import kube_keys
from tests import sealed_keys

pytestmark = pytest.mark.cluster


class FakeClock:
    """Our clock port, moved by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.current = now

    def now(self) -> dt.datetime:
        return self.current


class PooledKeys:
    """A key factory that certifies pre-generated keys, so no test waits for RSA generation."""

    def __init__(self, *indexes: int) -> None:
        self.indexes = list(indexes)

    def __call__(self, now: dt.datetime, policy: keys.KeyPolicy) -> keys.SealingKey:
        return keys.certify(sealed_keys.private_key(2048, self.indexes.pop(0)), now, policy)


def controller_secret(name: str, key: keys.SealingKey, label: str = "active") -> dict[str, object]:
    """A key Secret exactly as the sealed-secrets controller writes one."""
    return {
        "metadata": {"name": name, "labels": {kube_keys.KEY_LABEL: label}},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(key.certificate_pem()).decode(),
            "tls.key": base64.b64encode(key.private_key_pem()).decode(),
        },
    }


def test_reads_the_controllers_active_keys_and_ignores_others(
    admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(admin)
    active, legacy, compromised = (sealed_keys.sealing_key(index=i) for i in (0, 1, 2))
    core.create_namespaced_secret(namespace, controller_secret("sealed-secrets-keyabcde", active))
    core.create_namespaced_secret(namespace, controller_secret("sealed-secrets-key", legacy, "x"))
    core.create_namespaced_secret(namespace, controller_secret("bad", compromised, "compromised"))
    ring = kube_keys.read_ring(admin, namespace)
    # The legacy pre-v0.9 Secret counts by its name; a key labelled otherwise does not.
    assert [k.fingerprint for k in ring.keys] == [legacy.fingerprint, active.fingerprint]
    assert ring.keys[1].source == f"Secret {namespace}/sealed-secrets-keyabcde"
    # The reconcile pass reads the same ring through its cluster adapter (wiring's getter).
    adapter = cluster.Cluster(admin.configuration, config.ApplyConfig())
    try:
        same = kube_keys.read_ring_json(wiring.json_getter(adapter), namespace)
    finally:
        adapter.close()
    assert [(k.fingerprint, k.source) for k in same.keys] == [
        (k.fingerprint, k.source) for k in ring.keys
    ]


def test_makes_a_key_when_none_exists_and_renews_on_the_period(
    admin: k8s.ApiClient, namespace: str
) -> None:
    policy = keys.KeyPolicy(renew_period=dt.timedelta(days=30))
    clock = FakeClock(dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
    factory = PooledKeys(3, 4)

    first = kube_keys.ensure_current(admin, namespace, policy, clock, factory)
    assert len(first.keys) == 1
    clock.current += dt.timedelta(days=29)
    same = kube_keys.ensure_current(admin, namespace, policy, clock, factory)
    assert [k.fingerprint for k in same.keys] == [first.keys[0].fingerprint]

    clock.current += dt.timedelta(days=2)
    renewed = kube_keys.ensure_current(admin, namespace, policy, clock, factory)
    assert len(renewed.keys) == 2
    assert renewed.keys[1].fingerprint == first.keys[0].fingerprint  # old key kept for decrypting
    assert renewed.newest().fingerprint == sealed_keys.sealing_key(index=4).fingerprint

    stored = k8s.CoreV1Api(admin).list_namespaced_secret(
        namespace, label_selector=f"{kube_keys.KEY_LABEL}=active"
    )
    assert len(stored.items) == 2
    for item in stored.items:
        assert item.type == "kubernetes.io/tls"
        assert item.metadata.name.startswith("sealed-secrets-key")
        assert base64.b64decode(item.data["tls.key"]).startswith(b"-----BEGIN RSA PRIVATE KEY")


def test_unreadable_key_secret_or_api_error_is_a_clear_failure(
    control_plane: object, admin: k8s.ApiClient, namespace: str
) -> None:
    broken = controller_secret("sealed-secrets-keybroken", sealed_keys.sealing_key(index=0))
    broken["data"] = {"tls.key": base64.b64encode(b"junk").decode(), "tls.crt": "AAAA"}
    k8s.CoreV1Api(admin).create_namespaced_secret(namespace, broken)
    with pytest.raises(keys.KeyMaterialError, match=f"Secret {namespace}/sealed-secrets-keybroken"):
        kube_keys.read_ring(admin, namespace)
    nobody = control_plane.as_user("nobody")  # type: ignore[attr-defined]
    with pytest.raises(kube_keys.KeyStoreError, match="cannot list the key Secrets") as info:
        kube_keys.read_ring(nobody, namespace)
    assert isinstance(info.value.__cause__, k8s.ApiException)
