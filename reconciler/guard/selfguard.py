"""GitWarden's self-guard: its webhook configuration and namespace, which admission never sees.

The API server never sends admissionregistration objects to webhooks, and GitWarden's own
namespace is excluded so that a broken webhook cannot lock the cluster out. So an admin can
switch GitWarden off with one patch (`matchConditions: [{expression: "false"}]`) or change its
OPA data and fail-open setting, and no denial will ever say so. This module notices instead:
`check` compares the live ValidatingWebhookConfiguration with the expected document and names
the field managers (from managedFields) of every difference, and lists changes to GitWarden's
Namespace, Deployments, ConfigMaps and Secrets made by any field manager but the expected ones;
`restore` puts the webhook configuration back with server-side apply as `gitwarden`.

Both take a `ClusterPort`; `check_webhook` and `restore_webhook` are the same comparison and
restore for the webhook configuration alone (a `WebhookPort`), which the reconciler's loop runs
on every pass and on every change of that object (`reconciler.webhookguard`), as the CLI runs
`restore` once. Pure apart from the port: no logging, no retries; values printed are
configuration (the caBundle is a public certificate) and field paths, never object contents.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler import errors

FIELD_MANAGER = "gitwarden"
COMPARED = (
    "clientConfig",
    "rules",
    "matchConditions",
    "namespaceSelector",
    "objectSelector",
    "failurePolicy",
    "matchPolicy",
    "sideEffects",
    "timeoutSeconds",
    "admissionReviewVersions",
)
# What the API server fills in when a field is left out (admissionregistration/v1 defaults),
# so an expected document that omits one still equals its stored form.
_WEBHOOK_DEFAULTS: Mapping[str, Any] = {
    "failurePolicy": "Fail",
    "matchPolicy": "Equivalent",
    "timeoutSeconds": 10,
}
# Writes that are expected from other managers: status (no admission concern, written by the
# workload controllers) and the root CA that kube-controller-manager publishes in every namespace.
_ALLOWED_FOREIGN = (("ConfigMap", "kube-root-ca.crt", "kube-controller-manager"),)


class GuardError(errors.Transient):
    """The cluster could not be read or written; the message quotes status and reason only."""


@dataclass(frozen=True)
class ManagedEntry:
    """One managedFields entry, reduced to who, how, when and which top-level fields."""

    manager: str
    operation: str
    time: str = ""
    subresource: str = ""
    fields: tuple[str, ...] = ()
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    """The entry's fieldsV1, for attributing a difference to the managers that own it."""


@dataclass(frozen=True)
class ObjectMeta:
    """An object's identity and field managers (metadata only: never data or spec)."""

    kind: str
    name: str
    managed: tuple[ManagedEntry, ...]


@dataclass(frozen=True)
class Target:
    """What the guard protects: the expected webhook configuration and GitWarden's namespace."""

    webhook_configuration: Mapping[str, Any]
    namespace: str
    managers: tuple[str, ...] = (FIELD_MANAGER,)
    """Field managers whose changes in the namespace are GitOps' (the reconciler's)."""
    compare_client_config: bool = True
    """False when the expected clientConfig is unknown (then it is neither compared nor set)."""
    compare_ca_bundle: bool = True
    """False when another controller injects the caBundle (cert-manager's cainjector): then the
    live caBundle is neither compared nor replaced. A foreign caBundle cannot redirect the API
    server's calls (the URL or Service still is compared); it can only make them fail, and
    failurePolicy Fail then denies."""

    @property
    def name(self) -> str:
        """The webhook configuration's name."""
        return str(self.webhook_configuration["metadata"]["name"])


@dataclass(frozen=True)
class Drift:
    """One difference between the expected and the live webhook configuration."""

    path: str
    expected: Any
    live: Any
    managers: tuple[str, ...]
    """`manager (operation time)` of whoever owns the live field; for a removed field, every
    manager but gitwarden (the API server does not record who removed something)."""


@dataclass(frozen=True)
class ForeignChange:
    """A field manager other than the expected ones on an object in GitWarden's namespace."""

    kind: str
    name: str
    manager: str
    operation: str
    time: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class GuardReport:
    """What one pass found (and whether it put the webhook configuration back)."""

    webhook_configuration: str
    missing: bool
    drift: tuple[Drift, ...]
    foreign: tuple[ForeignChange, ...]
    client_config_checked: bool
    restored: bool = False

    @property
    def clean(self) -> bool:
        """Nothing to report."""
        return not (self.missing or self.drift or self.foreign)


class WebhookPort(Protocol):
    """The one ValidatingWebhookConfiguration, as the loop's guard needs it."""

    def read_webhook_configuration(self, name: str) -> Mapping[str, Any] | None:
        """The live object as JSON (with metadata.managedFields), or None if it is absent."""
        ...

    def apply_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        """Server-side apply `document` as field manager `gitwarden`, forcing conflicts."""
        ...

    def replace_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        """PUT `document` (carrying the live resourceVersion)."""
        ...


class ClusterPort(WebhookPort, Protocol):
    """The cluster, as the audit's guard needs it: the webhook configuration and the namespace."""

    def namespace_objects(self, namespace: str) -> Sequence[ObjectMeta]:
        """The Namespace and its Deployments, ConfigMaps and Secrets, metadata only."""
        ...


# ------------------------------------------------------------------------------- passes


def check(cluster: ClusterPort, target: Target) -> GuardReport:
    """Compare the live webhook configuration and list foreign changes in the namespace."""
    report = check_webhook(cluster, target)
    foreign = tuple(foreign_changes(cluster.namespace_objects(target.namespace), target))
    return dataclasses.replace(report, foreign=foreign)


def check_webhook(cluster: WebhookPort, target: Target) -> GuardReport:
    """Compare the live webhook configuration only (the namespace is not read)."""
    live = cluster.read_webhook_configuration(target.name)
    drift = () if live is None else tuple(differences(target, live))
    return GuardReport(target.name, live is None, drift, (), target.compare_client_config)


def restore(cluster: ClusterPort, target: Target) -> GuardReport:
    """`check`, then put the webhook configuration back when it differs (`restore_webhook`)."""
    return _restore(cluster, target, check(cluster, target))


def restore_webhook(cluster: WebhookPort, target: Target) -> GuardReport:
    """`check_webhook`, then put the webhook configuration back when it differs; verified by
    re-reading.

    Server-side apply cannot remove a field another manager owns (an added matchCondition
    stays), so when applying leaves a difference the webhooks are replaced outright and applied
    once more: the foreign manager then owns nothing, and `gitwarden` applies every field (a
    creator that set a field to the same value keeps sharing it, which is harmless).
    """
    return _restore(cluster, target, check_webhook(cluster, target))


def _restore(cluster: WebhookPort, target: Target, report: GuardReport) -> GuardReport:
    if not target.compare_client_config:
        raise GuardError("cannot restore without the expected clientConfig (--url or --service)")
    if not (report.missing or report.drift):
        return report
    document = _applied(target.webhook_configuration)
    cluster.apply_webhook_configuration(document)
    live = cluster.read_webhook_configuration(target.name)
    if live is not None and differences(target, live):
        replacement = json.loads(json.dumps(live))
        replacement["webhooks"] = _keeping_ca_bundles(document["webhooks"], live, target)
        replacement["metadata"].pop("managedFields", None)
        cluster.replace_webhook_configuration(replacement)
        cluster.apply_webhook_configuration(document)
        live = cluster.read_webhook_configuration(target.name)
    if live is None or differences(target, live):
        raise GuardError(f"ValidatingWebhookConfiguration {target.name} is still not as expected")
    return dataclasses.replace(report, restored=True)


def _keeping_ca_bundles(
    webhooks: list[dict[str, Any]], live: Mapping[str, Any], target: Target
) -> list[dict[str, Any]]:
    """The expected webhooks; with `compare_ca_bundle` off, each keeps its live caBundle (the
    injector's), so a replace does not cut the API server off until it injects again."""
    if target.compare_ca_bundle:
        return webhooks
    bundles = {
        w.get("name"): (w.get("clientConfig") or {}).get("caBundle")
        for w in live.get("webhooks") or []
        if isinstance(w, dict)
    }
    kept = json.loads(json.dumps(webhooks))
    for webhook in kept:
        bundle = bundles.get(webhook.get("name"))
        if bundle:
            webhook.setdefault("clientConfig", {})["caBundle"] = bundle
    return list(kept)


def _applied(expected: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(expected))
    document["metadata"] = {
        k: v for k, v in document["metadata"].items() if k in ("name", "labels", "annotations")
    }
    return document


# ------------------------------------------------------------------------ comparing


def differences(target: Target, live: Mapping[str, Any]) -> list[Drift]:
    """Every compared field of every webhook that differs, with the managers that own it."""
    entries = _entries(live)
    expected = {w["name"]: w for w in target.webhook_configuration.get("webhooks") or []}
    actual = {w.get("name"): w for w in live.get("webhooks") or [] if isinstance(w, dict)}
    fields = COMPARED if target.compare_client_config else COMPARED[1:]
    found: list[Drift] = []
    for name in sorted(set(expected) | {str(n) for n in actual}):
        key = f'k:{{"name":{json.dumps(name, separators=(",", ":"))}}}'
        if name not in actual:
            found.append(Drift(f"webhooks[{name}]", "present", None, _others(entries)))
            continue
        if name not in expected:
            owners = _owners(entries, ("f:webhooks", key))
            found.append(Drift(f"webhooks[{name}]", None, "present", owners))
            continue
        want, have = _normal(expected[name]), _normal(actual[name])
        if not target.compare_ca_bundle:
            for side in (want, have):
                side.get("clientConfig", {}).pop("caBundle", None)
        for field_name in fields:
            if want.get(field_name) == have.get(field_name):
                continue
            path = ("f:webhooks", key, f"f:{field_name}")
            where = f"webhooks[{name}].{field_name}"
            want_items, have_items = _by_name(want.get(field_name)), _by_name(have.get(field_name))
            if want_items is None or have_items is None:
                owners = _owners(entries, path) or _others(entries)
                found.append(Drift(where, want.get(field_name), have.get(field_name), owners))
            else:
                found.extend(_item_drift(entries, path, where, want_items, have_items))
    return found


def _by_name(value: Any) -> dict[str, Any] | None:
    """A list of named maps (matchConditions) by name, so each item is attributed alone."""
    if not isinstance(value, list) or not all(isinstance(v, dict) and "name" in v for v in value):
        return None
    return {str(v["name"]): v for v in value}


def _item_drift(
    entries: Sequence[ManagedEntry],
    path: tuple[str, ...],
    where: str,
    want: Mapping[str, Any],
    have: Mapping[str, Any],
) -> list[Drift]:
    found = []
    for item in sorted(set(want) | set(have)):
        if want.get(item) != have.get(item):
            key = f'k:{{"name":{json.dumps(item, separators=(",", ":"))}}}'
            owners = _owners(entries, (*path, key)) if item in have else ()
            found.append(
                Drift(
                    f"{where}[{item}]", want.get(item), have.get(item), owners or _others(entries)
                )
            )
    return found


def _normal(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values and fill the API server's defaults, so equal means equal."""
    value: dict[str, Any] = _prune(json.loads(json.dumps(webhook))) or {}
    for key, default in _WEBHOOK_DEFAULTS.items():
        value.setdefault(key, default)
    for rule in value.get("rules") or []:
        rule.setdefault("scope", "*")
    service = value.get("clientConfig", {}).get("service")
    if isinstance(service, dict):
        service.setdefault("port", 443)
    return value


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _entries(obj: Mapping[str, Any]) -> tuple[ManagedEntry, ...]:
    metadata = obj.get("metadata") or {}
    return tuple(managed_entry(e) for e in metadata.get("managedFields") or [])


def managed_entry(entry: Mapping[str, Any]) -> ManagedEntry:
    """A managedFields item as a value; `fields` are top-level paths (metadata one deeper)."""
    raw = entry.get("fieldsV1") or {}
    paths: list[str] = []
    for key, sub in raw.items():
        name = key.removeprefix("f:")
        if name == "metadata" and isinstance(sub, dict):
            paths.extend(f"metadata.{k.removeprefix('f:')}" for k in sub)
        elif key != ".":
            paths.append(name)
    return ManagedEntry(
        manager=str(entry.get("manager", "")),
        operation=str(entry.get("operation", "")),
        time=str(entry.get("time") or ""),
        subresource=str(entry.get("subresource") or ""),
        fields=tuple(sorted(paths)),
        raw=raw,
    )


def _describe(entry: ManagedEntry) -> str:
    when = " ".join(part for part in (entry.operation, entry.time) if part)
    return f"{entry.manager} ({when})" if when else entry.manager


def _owners(entries: Sequence[ManagedEntry], path: tuple[str, ...]) -> tuple[str, ...]:
    owners = []
    for entry in entries:
        node: Any = entry.raw
        for step in path:
            node = node.get(step) if isinstance(node, dict) else None
        if node is not None:
            owners.append(_describe(entry))
    return tuple(owners)


def _others(entries: Sequence[ManagedEntry]) -> tuple[str, ...]:
    return tuple(_describe(e) for e in entries if e.manager != FIELD_MANAGER)


def foreign_changes(objects: Sequence[ObjectMeta], target: Target) -> list[ForeignChange]:
    """Field managers on GitWarden's own objects that are not GitOps'."""
    found = []
    for obj in objects:
        for entry in obj.managed:
            if entry.manager in target.managers or entry.subresource == "status":
                continue
            if (obj.kind, obj.name, entry.manager) in _ALLOWED_FOREIGN:
                continue
            found.append(
                ForeignChange(
                    obj.kind, obj.name, entry.manager, entry.operation, entry.time, entry.fields
                )
            )
    return found
