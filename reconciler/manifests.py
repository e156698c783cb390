"""The values that flow from load through decrypt to plan: `Manifests` and `DecryptedManifests`.

Owns the immutable shapes of parsed objects (deep-frozen bodies) and the rule that a
`DecryptedManifests` can never contain a SealedSecret, so nothing still encrypted reaches plan or
apply. Must not parse YAML, talk to a cluster or decrypt anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from reconciler import objectref, secret_value

if TYPE_CHECKING:  # only the type: values sit below the stages (import-linter layers)
    from reconciler import verify

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


MAX_DEPTH = 200  # Kubernetes objects, CRD schemas included, stay far below


def json_problem(value: Any) -> str | None:
    """Why `value` is not a plain JSON tree (what the API server accepts), or None.

    Keys must be strings; values null, booleans, numbers, strings, lists and mappings only
    (no YAML timestamps, binaries or sets); nesting at most MAX_DEPTH deep. Iterative, so a deep
    document is refused rather than exhausting the stack. The answer names no value.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, Mapping):
            for key, item in node.items():
                if not isinstance(key, str):
                    return f"a key of type {type(key).__name__} is not a string"
                stack.append((item, depth + 1))
        elif isinstance(node, list | tuple):
            stack.extend((item, depth + 1) for item in node)
        elif node is not None and not isinstance(node, bool | int | float | str):
            return f"a value of type {type(node).__name__} has no JSON form"
    return None


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of a (frozen or plain) tree: sorted keys, no spaces.

    Equal trees give equal digests whatever their key order, so plan can tell an unchanged
    object from a changed one without asking the API server.
    """
    text = json.dumps(thaw(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object from the repository: its file (`source`), the line it starts on."""

    source: str
    body: Mapping[str, Any]
    line: int = 0

    @staticmethod
    def of(source: str, body: Mapping[str, Any], line: int = 0) -> Manifest:
        """A manifest holding a frozen copy of `body`."""
        return Manifest(source=source, body=freeze(body), line=line)

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
    def ref(self) -> objectref.ObjectRef:
        """The object's identity: API group (from apiVersion), kind, namespace, name."""
        group = self.api_version.rpartition("/")[0]
        return objectref.ObjectRef(group, self.kind, self.namespace, self.name)

    @property
    def is_sealed_secret(self) -> bool:
        # Any SealedSecret, whatever its version: an unknown version must be refused by the
        # decrypt stage, never passed through as an ordinary object.
        return self.kind == SEALED_SECRET_KIND


@dataclass(frozen=True)
class Manifests:
    """What the load stage produced for one verified revision (only load makes these).

    Holding the `VerifiedRevision` (not a commit id) means nothing can build the input of the
    later stages without having passed verify. `empty_paths` lists configured paths that exist
    but hold no object, for plan's never-to-empty guard.
    """

    verified: verify.VerifiedRevision
    items: tuple[Manifest, ...]
    empty_paths: tuple[str, ...] = ()

    @property
    def revision(self) -> str:
        """The verified commit id."""
        return self.verified.commit


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
    sealed_digest: str = ""
    """`digest` of the SealedSecret's body (ciphertext, never plaintext): what plan compares."""

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

    verified: verify.VerifiedRevision
    manifests: tuple[Manifest, ...]
    secrets: tuple[DecryptedSecret, ...]
    key_hints: KeyHints
    rsa_operations: int
    empty_paths: tuple[str, ...] = ()

    @property
    def revision(self) -> str:
        """The verified commit id."""
        return self.verified.commit

    def __post_init__(self) -> None:
        # The invariant that keeps ciphertext away from apply: refuse to exist otherwise.
        for manifest in self.manifests:
            if manifest.is_sealed_secret:
                raise ValueError(f"{manifest.source}: a SealedSecret cannot pass the decrypt stage")
