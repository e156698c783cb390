"""The sealing keys in the cluster: Secrets labelled as the sealed-secrets controller labels them.

Owns reading the key ring from `kubernetes.io/tls` Secrets in GitWarden's namespace labelled
`sealedsecrets.bitnami.com/sealed-secrets-key=active` (plus the controller's pre-v0.9 Secret named
`sealed-secrets-key`), writing a new key the same way, and the make-one-when-due step. A cluster
moving from the controller keeps its keys, and could move back. The only reconciler module that
imports `kubernetes` for keys (an import-linter contract holds it to that); no retries here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client as k8s

from reconciler import errors
from reconciler.sealed import keys

KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
ACTIVE = "active"
NAME_PREFIX = "sealed-secrets-key"
LEGACY_NAME = "sealed-secrets-key"
TLS_TYPE = "kubernetes.io/tls"


class KeyStoreError(errors.Transient):
    """The key Secrets could not be read or written; the API error is chained as `__cause__`."""


def read_ring(api: k8s.ApiClient, namespace: str) -> keys.KeyRing:
    """Every active key in `namespace`, newest certificate first."""
    core = k8s.CoreV1Api(api)
    try:
        listed = core.list_namespaced_secret(namespace, label_selector=f"{KEY_LABEL}={ACTIVE}")
        secrets = list(listed.items)
        legacy = _read_optional(core, namespace, LEGACY_NAME)
    except k8s.ApiException as exc:
        raise KeyStoreError(f"cannot list the key Secrets in {namespace}: {exc.reason}") from exc
    if legacy is not None and all(s.metadata.name != LEGACY_NAME for s in secrets if s.metadata):
        secrets.append(legacy)
    return keys.KeyRing.of(_key_of(secret, namespace) for secret in secrets)


def read_ring_json(
    get: Callable[[str, Sequence[tuple[str, str]]], Mapping[str, Any] | None], namespace: str
) -> keys.KeyRing:
    """`read_ring` over a caller's JSON GET (`get(path, query)`, None for 404).

    The reconcile pass reads the ring through its cluster adapter this way, with the adapter's
    error mapping and rate limit, and without loading the typed client's CoreV1Api (over a
    second of imports on every `gitwarden reconcile --once`).
    """
    base = f"/api/v1/namespaces/{namespace}/secrets"
    listed = get(base, [("labelSelector", f"{KEY_LABEL}={ACTIVE}")]) or {}
    secrets = [s for s in listed.get("items") or [] if isinstance(s, Mapping)]
    legacy = get(f"{base}/{LEGACY_NAME}", [])
    names = {(s.get("metadata") or {}).get("name") for s in secrets}
    if legacy is not None and LEGACY_NAME not in names:
        secrets.append(legacy)
    return keys.KeyRing.of(
        _key_from(str((s.get("metadata") or {}).get("name") or "?"), s.get("data"), namespace)
        for s in secrets
    )


def write_key(api: k8s.ApiClient, namespace: str, key: keys.SealingKey) -> str:
    """Store `key` as a new labelled TLS Secret; returns the generated name."""
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(
            generate_name=NAME_PREFIX, namespace=namespace, labels={KEY_LABEL: ACTIVE}
        ),
        type=TLS_TYPE,
        data={
            "tls.crt": base64.b64encode(key.certificate_pem()).decode("ascii"),
            "tls.key": base64.b64encode(key.private_key_pem()).decode("ascii"),
        },
    )
    try:
        created = k8s.CoreV1Api(api).create_namespaced_secret(namespace, body)
    except k8s.ApiException as exc:
        raise KeyStoreError(f"cannot create a key Secret in {namespace}: {exc.reason}") from exc
    return str(created.metadata.name) if created.metadata else ""


def ensure_current(
    api: k8s.ApiClient,
    namespace: str,
    policy: keys.KeyPolicy,
    clock: keys.Clock,
    factory: keys.KeyFactory = keys.generate,
) -> keys.KeyRing:
    """The key ring, after making a key when there is none or the newest is a period old.

    Old keys are kept: values sealed for them must still open. Only one reconciler replica (the
    Lease holder) should call this, so two replicas do not both make a key.
    """
    ring = read_ring(api, namespace)
    now = clock.now()
    if not keys.renewal_due(ring, now, policy):
        return ring
    write_key(api, namespace, factory(now, policy))
    return read_ring(api, namespace)


def _read_optional(core: k8s.CoreV1Api, namespace: str, name: str) -> k8s.V1Secret | None:
    try:
        return core.read_namespaced_secret(name, namespace)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _key_of(secret: k8s.V1Secret, namespace: str) -> keys.SealingKey:
    name = secret.metadata.name if secret.metadata else None
    return _key_from(name or "?", secret.data, namespace)


def _key_from(name: str, raw: object, namespace: str) -> keys.SealingKey:
    source = f"Secret {namespace}/{name}"
    data: Mapping[str, bytes | str] = raw if isinstance(raw, Mapping) else {}
    if "tls.key" not in data or "tls.crt" not in data:
        raise keys.KeyMaterialError(f"{source}: needs both tls.key and tls.crt")
    try:
        tls_key = base64.b64decode(data["tls.key"], validate=True)
        tls_crt = base64.b64decode(data["tls.crt"], validate=True)
    except (binascii.Error, ValueError):
        tls_key = tls_crt = b""
    return keys.from_pem(tls_key, tls_crt, source)
