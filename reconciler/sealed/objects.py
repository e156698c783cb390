"""SealedSecret objects: open one into a Secret, seal a Secret into one, reseal with a new key.

Owns the object rules of the sealed-secrets controller and kubeseal: the scope comes from the
SealedSecret's top-level metadata only; `spec.template` metadata, type and immutable go into the
Secret; name and namespace are forced to the SealedSecret's; every value must open or no Secret
is produced; the deprecated `spec.data` form (one sealed JSON Secret) is opened when allowed.
Also owns the order in which keys are tried, so that no RSA operation is spent twice.

Not supported, refused by name: `spec.template.data` (Go templates with Sprig functions). Must not
log, and must not put ciphertext or plaintext into an error: reasons are fixed phrases.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from reconciler import manifests, secret_value
from reconciler.sealed import errors, keys, wire

API_VERSION = "bitnami.com/v1alpha1"
KIND = "SealedSecret"

# Metadata kubeseal does not carry from a Secret into `spec.template.metadata`.
_SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "ownerReferences",
    "managedFields",
)
_STRIPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_STRIPPED_ANNOTATION_PREFIXES = ("kubecfg.ksonnet.io/",)

_NO_KEY = (
    "no key could decrypt it (sealed for another key, or the object was renamed, moved to "
    "another namespace or its scope annotation changed since it was sealed)"
)


@dataclass(frozen=True)
class Settings:
    """Decryption options; `accept_deprecated_data` mirrors the controller's default (true)."""

    accept_deprecated_data: bool = True


class OpenedValues(Protocol):
    """Values opened earlier in this process, by `value_digest`, with the key that opened them.

    The digest covers the label and every sealed byte (the AES-GCM tag included), so a hit is
    the same value sealed for the same place; the caller's cache owns lifetime and size.
    """

    def get(self, digest: str) -> tuple[str, secret_value.SecretValue] | None:
        """(key fingerprint, plaintext) for `digest`, if it was opened before."""
        ...

    def put(self, digest: str, fingerprint: str, value: secret_value.SecretValue) -> None:
        """Remember that the key `fingerprint` opened `digest` to `value`."""
        ...


class KeyChooser:
    """Tries the ring's keys for one decrypt run, cheapest guess first, and counts RSA work.

    A value already opened in this process (`opened`) costs no RSA operation, as long as the
    key that opened it is still in the ring: a key taken out of the ring stops opening values,
    cached or not. Otherwise the order for a value: the key that opened this exact value last
    time (`hints`), the keys that opened other values of the same object in this run, the key
    that opened the previous value, then the rest newest first. Keys whose modulus cannot fit
    the wrapped key are skipped without an RSA operation. Mutable, but it lives only as long
    as one stage call.
    """

    def __init__(
        self,
        ring: keys.KeyRing,
        hints: manifests.KeyHints,
        opened: OpenedValues | None = None,
    ) -> None:
        self._ring = ring
        self._hints = hints
        self._opened = opened
        self._last: str | None = None
        self.used: dict[str, str] = {}
        self.rsa_operations = 0

    def _candidates(self, digest: str, same_object: list[str]) -> Iterator[keys.SealingKey]:
        seen: set[str] = set()
        preferred = [self._hints.get(digest), *same_object, self._last]
        for fingerprint in preferred:
            key = self._ring.by_fingerprint(fingerprint) if fingerprint else None
            if key is not None and fingerprint not in seen:
                seen.add(key.fingerprint)
                yield key
        for key in self._ring.keys:
            if key.fingerprint not in seen:
                seen.add(key.fingerprint)
                yield key

    def open(self, blob: bytes, label: bytes, same_object: list[str]) -> tuple[bytes, str]:
        """The plaintext and the fingerprint of the key that opened it, or `WireError`."""
        framed = wire.split(blob)
        digest = value_digest(label, blob)
        cached = self._opened.get(digest) if self._opened is not None else None
        if cached is not None and self._ring.by_fingerprint(cached[0]) is not None:
            fingerprint, value = cached
            self._last = fingerprint
            self.used[digest] = fingerprint
            return value.reveal(), fingerprint
        altered = False
        for key in self._candidates(digest, same_object):
            if not framed.fits(key.private_key):
                continue
            self.rsa_operations += 1
            try:
                session_key = wire.unwrap(key.private_key, framed, label)
            except wire.WireError:
                continue
            try:
                plaintext = wire.open_payload(session_key, framed)
            except wire.WireError:
                # The controller goes on to the next key too; remember why this one failed.
                altered = True
                continue
            self._last = key.fingerprint
            self.used[digest] = key.fingerprint
            if self._opened is not None:
                self._opened.put(digest, key.fingerprint, secret_value.SecretValue(plaintext))
            return plaintext, key.fingerprint
        if not self._ring.keys:
            raise wire.WireError("no sealing keys are loaded")
        if altered:
            raise wire.WireError("the value was altered: its authentication tag does not verify")
        raise wire.WireError(_NO_KEY)


def value_digest(label: bytes, blob: bytes) -> str:
    """What a key hint is filed under: the label and the sealed bytes, hashed."""
    return hashlib.sha256(len(label).to_bytes(4, "big") + label + blob).hexdigest()


def ref(body: Mapping[str, Any]) -> str:
    """`namespace/name` of an object, for messages."""
    meta = _mapping(body.get("metadata"))
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def unseal(
    body: Mapping[str, Any],
    chooser: KeyChooser,
    settings: Settings = Settings(),
    source: str = "",
) -> manifests.DecryptedSecret:
    """The Secret a SealedSecret stands for, or `DecryptionError` listing every failure."""
    obj = ref(body)

    def fail(reason: str, key: str | None = None) -> errors.DecryptionError:
        return errors.DecryptionError(obj, (errors.Failure(key, reason),))

    sealed_digest = _json_digest(body, fail)

    if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
        raise fail(f"unsupported apiVersion/kind {body.get('apiVersion')}/{body.get('kind')}")
    meta = _mapping(body.get("metadata"))
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        raise fail("metadata.name is missing")
    if not isinstance(namespace, str) or not namespace:
        raise fail("metadata.namespace is missing (the scope label needs it)")
    spec = _mapping(body.get("spec"))
    template = _mapping(spec.get("template"))
    if template.get("data"):
        raise fail(
            "spec.template.data (Go templates) is not supported by GitWarden; "
            "seal the rendered value into spec.encryptedData instead"
        )
    # The label comes from the top-level metadata, never from the template: a template that
    # claims another scope must not widen where the value may be opened.
    label = wire.label(wire.scope_of(_mapping(meta.get("annotations"))), namespace, name)
    encrypted = spec.get("encryptedData") or {}
    if spec.get("data") is not None:
        if encrypted:
            raise fail("spec.data (deprecated) and spec.encryptedData cannot both be set")
        if not settings.accept_deprecated_data:
            raise fail("spec.data is the deprecated format and is turned off; reseal the object")
        opened = _unseal_v1(
            spec.get("data"), label, chooser, obj=obj, source=source, place=(namespace, name)
        )
        return dataclasses.replace(opened, sealed_digest=sealed_digest)
    if not isinstance(encrypted, Mapping):
        raise fail("spec.encryptedData is not a mapping")

    data: dict[str, secret_value.SecretValue] = {}
    failures: list[errors.Failure] = []
    openers: list[str] = []
    for key in sorted(encrypted):
        text = encrypted[key]
        if not isinstance(text, str):
            failures.append(errors.Failure(key, "value is not a string"))
            continue
        try:
            plaintext, fingerprint = chooser.open(wire.decode_text(text), label, openers)
        except wire.WireError as exc:
            failures.append(errors.Failure(key, str(exc)))
            continue
        openers.append(fingerprint)
        data[key] = secret_value.SecretValue(plaintext)
    if failures:
        raise errors.DecryptionError(obj, tuple(failures))

    opened = _decrypted(source, (namespace, name), template, data)
    return dataclasses.replace(opened, sealed_digest=sealed_digest)


def _unseal_v1(
    text: object,
    label: bytes,
    chooser: KeyChooser,
    *,
    obj: str,
    source: str,
    place: tuple[str, str],
) -> manifests.DecryptedSecret:
    """The deprecated form: `spec.data` is one sealed value holding a whole JSON v1 Secret."""

    def fail(reason: str) -> errors.DecryptionError:
        return errors.DecryptionError(obj, (errors.Failure("spec.data", reason),))

    if not isinstance(text, str):
        raise fail("value is not a string")
    try:
        plaintext, _ = chooser.open(wire.decode_text(text), label, [])
    except wire.WireError as exc:
        raise fail(str(exc)) from None
    # Parsing plaintext: failures are reported without chaining, since library exceptions keep
    # the input they failed on (JSONDecodeError.doc, UnicodeDecodeError.object).
    secret = _json_object(plaintext)
    if secret is None:
        raise fail("decrypted content is not a JSON Secret")
    values = _v1_values(secret)
    if values is None:
        raise fail("decrypted Secret has data that is not valid base64 or text")
    return _decrypted(
        source, place, secret, {k: secret_value.SecretValue(v) for k, v in values.items()}
    )


def _decrypted(
    source: str,
    place: tuple[str, str],
    shape: Mapping[str, Any],
    data: dict[str, secret_value.SecretValue],
) -> manifests.DecryptedSecret:
    """The Secret: metadata, type and immutable from `shape` (the template, or the v1 Secret)."""
    namespace, name = place
    immutable = shape.get("immutable")
    return manifests.DecryptedSecret(
        source=source,
        namespace=namespace,
        name=name,
        metadata=_secret_metadata(shape.get("metadata")),
        type=_optional_str(shape.get("type")),
        immutable=immutable if isinstance(immutable, bool) else None,
        data=MappingProxyType(data),
    )


def _json_object(plaintext: bytes) -> Mapping[str, Any] | None:
    try:
        parsed = json.loads(plaintext)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    return parsed if isinstance(parsed, Mapping) else None


def _v1_values(secret: Mapping[str, Any]) -> dict[str, bytes] | None:
    values: dict[str, bytes] = {}
    try:
        for key, encoded in _mapping(secret.get("data")).items():
            values[str(key)] = base64.b64decode(encoded, validate=True)
        # The API server merges stringData over data; the controller's decoder does the same.
        for key, text in _mapping(secret.get("stringData")).items():
            values[str(key)] = text.encode()
    except (binascii.Error, ValueError, TypeError, AttributeError):
        return None
    return values


def seal(
    secret: Mapping[str, Any],
    certificate: x509.Certificate,
    now: dt.datetime,
    scope: wire.Scope | None = None,
) -> dict[str, Any]:
    """A SealedSecret for a v1 Secret, as `kubeseal --cert` writes it (`data` and `stringData`)."""
    public_key = _sealing_key(certificate, now)
    if secret.get("kind") != "Secret" or secret.get("apiVersion", "v1") != "v1":
        raise keys.KeyMaterialError("input is not a v1 Secret")
    meta = _mapping(secret.get("metadata"))
    name = meta.get("name")
    namespace = meta.get("namespace") or ""
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        raise keys.KeyMaterialError("the Secret needs metadata.name (and a string namespace)")
    chosen = scope or wire.scope_of(_mapping(meta.get("annotations")))
    if not namespace and chosen is not wire.Scope.CLUSTER_WIDE:
        raise keys.KeyMaterialError(f"a {chosen.value} SealedSecret needs metadata.namespace")
    values = _v1_values(secret)
    if values is None:
        raise keys.KeyMaterialError("the Secret has data that is not valid base64 or text")
    label = wire.label(chosen, namespace, name)
    encrypted = {
        key: wire.encode_text(wire.seal(public_key, value, label))
        for key, value in sorted(values.items())
    }

    template_meta = _without(meta, _SERVER_FIELDS)
    annotations = {
        k: v
        for k, v in _mapping(meta.get("annotations")).items()
        if k not in _STRIPPED_ANNOTATIONS and not k.startswith(_STRIPPED_ANNOTATION_PREFIXES)
    }
    annotations.update(wire.scope_annotations(chosen))
    if annotations:
        template_meta["annotations"] = annotations
    else:
        template_meta.pop("annotations", None)
    template: dict[str, Any] = {"metadata": template_meta}
    for field in ("type", "immutable"):
        if secret.get(field) is not None:
            template[field] = secret[field]

    top: dict[str, Any] = {"name": name}
    if namespace:
        top["namespace"] = namespace
    if chosen is not wire.Scope.STRICT:
        top["annotations"] = wire.scope_annotations(chosen)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": top,
        "spec": {"template": template, "encryptedData": encrypted},
    }


def seal_raw(
    value: bytes,
    certificate: x509.Certificate,
    now: dt.datetime,
    scope: wire.Scope,
    *,
    namespace: str = "",
    name: str = "",
) -> str:
    """One sealed value as base64 text, as `kubeseal --raw` prints it."""
    if scope is not wire.Scope.CLUSTER_WIDE and not namespace:
        raise keys.KeyMaterialError(f"{scope.value} scope needs a namespace")
    if scope is wire.Scope.STRICT and not name:
        raise keys.KeyMaterialError("strict scope needs a name")
    public_key = _sealing_key(certificate, now)
    return wire.encode_text(wire.seal(public_key, value, wire.label(scope, namespace, name)))


def reseal(
    body: Mapping[str, Any],
    chooser: KeyChooser,
    certificate: x509.Certificate,
    now: dt.datetime,
) -> dict[str, Any]:
    """The same SealedSecret with every value sealed again for `certificate`.

    Top-level metadata (and so the scope) is kept as it is. The deprecated `spec.data` form comes
    out in the `encryptedData` form, its Secret metadata moved into `spec.template`.
    """
    public_key = _sealing_key(certificate, now)
    opened = unseal(body, chooser, Settings(accept_deprecated_data=True))
    meta = _mapping(body.get("metadata"))
    label = wire.label(
        wire.scope_of(_mapping(meta.get("annotations"))), opened.namespace, opened.name
    )
    result = manifests.thaw(manifests.freeze(body))
    result.pop("status", None)
    spec = result.setdefault("spec", {})
    if spec.pop("data", None) is not None:
        template: dict[str, Any] = {"metadata": manifests.thaw(opened.metadata)}
        if opened.type:
            template["type"] = opened.type
        if opened.immutable is not None:
            template["immutable"] = opened.immutable
        spec["template"] = template
    spec["encryptedData"] = {
        key: wire.encode_text(wire.seal(public_key, value.reveal(), label))
        for key, value in sorted(opened.data.items())
    }
    return dict(result)


def _sealing_key(certificate: x509.Certificate, now: dt.datetime) -> rsa.RSAPublicKey:
    # kubeseal refuses an expired certificate; so do we, so that nobody seals for a dead key.
    if now > certificate.not_valid_after_utc:
        raise keys.KeyMaterialError(
            f"the certificate expired on {certificate.not_valid_after_utc.isoformat()}"
        )
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise keys.KeyMaterialError("the certificate's key is not RSA")
    return public_key


def _json_digest(body: Mapping[str, Any], fail: Callable[[str], Exception]) -> str:
    # Before anything reads it: a YAML document from stdin (`gitwarden unseal`) may hold what
    # JSON cannot, e.g. an integer key, which crashed the digest with a TypeError.
    problem = manifests.json_problem(body)
    if problem is not None:
        raise fail(f"not a JSON object: {problem}")
    return manifests.digest(body)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else MappingProxyType({})


def _without(meta: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: manifests.thaw(v) for k, v in meta.items() if k not in fields}


def _secret_metadata(meta: object) -> Mapping[str, Any]:
    # Name and namespace are forced to the SealedSecret's, whatever the template says.
    frozen: Mapping[str, Any] = manifests.freeze(_without(_mapping(meta), ("name", "namespace")))
    return frozen


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
