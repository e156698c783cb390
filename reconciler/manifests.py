"""The values that flow from load through decrypt to plan: `Manifests` and `DecryptedManifests`.

Owns the immutable shapes of parsed objects (deep-frozen bodies) and the rule that a
`DecryptedManifests` can never contain a SealedSecret, so nothing still encrypted reaches plan or
apply. Must not parse YAML, talk to a cluster or decrypt anything.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reconciler import secret_value

SEALED_SECRET_KIND = "SealedSecret"  # noqa: S105  # a kind name, not a password

Frozen = Any  # a MappingProxyType / tuple / scalar tree made by `freeze`


def freeze(value: Any) -> Frozen:
    """A read-only deep copy of a JSON-like tree: mappings become proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Frozen) -> Any:
    """A mutable deep copy of a frozen tree (dicts and lists), for serializers and clients."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object from the repository; `source` says where (path and document)."""

    source: str
    body: Mapping[str, Any]

    @staticmethod
    def of(source: str, body: Mapping[str, Any]) -> Manifest:
        """A manifest holding a frozen copy of `body`."""
        return Manifest(source=source, body=freeze(body))

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.body.get("metadata")
        return meta if isinstance(meta, Mapping) else MappingProxyType({})

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def is_sealed_secret(self) -> bool:
        # Any SealedSecret, whatever its version: an unknown version must be refused by the
        # decrypt stage, never passed through as an ordinary object.
        return self.kind == SEALED_SECRET_KIND


@dataclass(frozen=True)
class Manifests:
    """What the load stage produced for one verified revision."""

    revision: str
    items: tuple[Manifest, ...]


@dataclass(frozen=True)
class DecryptedSecret:
    """A Secret produced from a SealedSecret; its values stay wrapped until apply."""

    source: str
    namespace: str
    name: str
    metadata: Mapping[str, Any]
    type: str | None
    immutable: bool | None
    data: Mapping[str, secret_value.SecretValue]

    def body_for_apply(self) -> dict[str, Any]:
        """The v1 Secret with base64 data: plaintext in a plain dict, for the API client only."""
        meta = thaw(self.metadata)
        meta["name"] = self.name
        meta["namespace"] = self.namespace
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": meta}
        if self.type:
            body["type"] = self.type
        if self.immutable is not None:
            body["immutable"] = self.immutable
        body["data"] = {
            key: base64.b64encode(value.reveal()).decode("ascii")
            for key, value in sorted(self.data.items())
        }
        return body


@dataclass(frozen=True)
class KeyHints:
    """Which key (by fingerprint) opened which sealed value (by digest of label and ciphertext).

    Handed from one decrypt run to the next so that an unchanged value costs one RSA operation
    however many keys the ring holds.
    """

    by_value: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, value_digest: str) -> str | None:
        return self.by_value.get(value_digest)


@dataclass(frozen=True)
class DecryptedManifests:
    """The decrypt stage's result: ordinary manifests plus Secrets opened from SealedSecrets."""

    revision: str
    manifests: tuple[Manifest, ...]
    secrets: tuple[DecryptedSecret, ...]
    key_hints: KeyHints
    rsa_operations: int

    def __post_init__(self) -> None:
        # The invariant that keeps ciphertext away from apply: refuse to exist otherwise.
        for manifest in self.manifests:
            if manifest.is_sealed_secret:
                raise ValueError(f"{manifest.source}: a SealedSecret cannot pass the decrypt stage")
