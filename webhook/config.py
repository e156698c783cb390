"""The admission policy's configuration: who GitOps is, what is in scope, who is exempt.

Owns one value, `AdmissionConfig`, read from a YAML/JSON document (the chart's ConfigMap), and
the things derived from it: the OPA data document the Rego policy reads at
`data.gitwarden.admission`, (in `webhook.registration`) the ValidatingWebhookConfiguration, and
the webhook's own lookups (which parents it reads). The controllers' allowances are data in
`webhook.allowances`, and reading the document is `webhook.configreader`'s. Deriving all of
them from one value keeps the API server's fast path, the policy and the webhook in agreement.
It does no I/O beyond `load()` and holds no secrets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webhook import allowances, configreader
from webhook.allowances import SystemAllowance

MODES = ("enforce", "warn", "audit")


ConfigError = configreader.ConfigError


@dataclass(frozen=True)
class Label:
    """A label key and the value that selects."""

    key: str
    value: str


@dataclass(frozen=True)
class ClusterKind:
    """A cluster-scoped kind guarded whatever its labels say (`resource` feeds the rules)."""

    group: str
    kind: str
    resource: str


@dataclass(frozen=True)
class ParentSubresource:
    """A subresource whose request carries no labels of its object: decided on the parent's.

    The webhook reads the parent's metadata for exactly these, so it needs `get` on the
    `(group, resource)` pairs of `AdmissionConfig.parent_kinds` and nothing else.
    """

    group: str
    resource: str
    subresource: str
    operations: tuple[str, ...]


DEFAULT_PARENT_SUBRESOURCES: tuple[ParentSubresource, ...] = (
    ParentSubresource("", "pods", "eviction", ("CREATE",)),
    ParentSubresource("", "pods", "binding", ("CREATE",)),
    ParentSubresource("", "pods", "exec", ("CONNECT",)),
    ParentSubresource("", "pods", "attach", ("CONNECT",)),
    ParentSubresource("", "pods", "portforward", ("CONNECT",)),
    ParentSubresource("", "pods", "proxy", ("CONNECT",)),
    ParentSubresource("", "serviceaccounts", "token", ("CREATE",)),
)

# The API server never sends its own webhook and policy configuration kinds to webhooks
# (so that a broken webhook cannot lock them), so listing them as guarded would only look safe.
UNGUARDABLE_GROUP = "admissionregistration.k8s.io"

# Groups that hold many identities: an exemption or break-glass entry naming one would let
# every member (any service account, any node, any request without credentials, anyone given
# a shared node-join bootstrap token) bypass GitOps.
BROAD_GROUPS = (
    "system:authenticated",
    "system:unauthenticated",
    "system:serviceaccounts",
    "system:nodes",
    "system:masters",
)
BROAD_GROUP_PREFIXES = ("system:serviceaccounts:", "system:bootstrappers")
# The user of every request that carries no credentials (anonymous auth is on by default).
ANONYMOUS_USER = "system:anonymous"


def _is_broad(group: str) -> bool:
    return group in BROAD_GROUPS or group.startswith(BROAD_GROUP_PREFIXES)


@dataclass(frozen=True)
class AdmissionConfig:
    """Everything the admission policy and the webhook registration are configured by."""

    namespace: str = "gitwarden"
    """GitWarden's own namespace: never blocked, home of the GitOps service account."""
    gitops_service_account: str = "reconciler"
    extra_gitops_usernames: tuple[str, ...] = ()
    require_pod_bound_token: bool = False
    """Only tokens bound to a Pod (userInfo.extra pod-name) count as the GitOps identity."""
    pod_name_prefixes: tuple[str, ...] = ()
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    """With verify_pod_live: labels the reconciler's pods carry (e.g. app.kubernetes.io/name);
    the live pod must have them all."""
    verify_pod_live: bool = False
    """With pod-bound tokens: the webhook also checks that the pod named in the token is alive
    with the token's uid (defeats impersonation with made-up extras). GitOps requests then go
    through the webhook instead of being skipped in the API server."""
    managed_label: Label = Label("gitwarden.dev/managed", "true")
    protected_namespace_label: Label = Label("gitwarden.dev/protected", "true")
    repository_url: str = "the GitOps repository"
    repository_branch: str = "main"
    path_annotation: str = "gitwarden.dev/source-path"
    default_path: str = "the manifest that declares it"
    cluster_scoped_kinds: tuple[ClusterKind, ...] = ()
    scale_resources: tuple[tuple[str, str], ...] = (
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "replicasets"),
        ("", "replicationcontrollers"),
    )
    """(group, resource) whose */scale is guarded (custom resources too, when listed)."""
    parent_subresources: tuple[ParentSubresource, ...] = DEFAULT_PARENT_SUBRESOURCES
    """Other subresources decided on their parent's labels (pod eviction, exec, tokens...)."""
    namespace_content_kinds: tuple[tuple[str, str, str], ...] = (
        ("", "v1", "configmaps"),
        ("", "v1", "services"),
        ("", "v1", "serviceaccounts"),
        ("", "v1", "persistentvolumeclaims"),
        ("apps", "v1", "deployments"),
        ("apps", "v1", "statefulsets"),
        ("apps", "v1", "daemonsets"),
        ("batch", "v1", "cronjobs"),
        ("networking.k8s.io", "v1", "ingresses"),
        ("rbac.authorization.k8s.io", "v1", "roles"),
        ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    )
    """(group, version, resource) listed (labelSelector managed, limit 1) before a namespace is
    deleted; the webhook needs `list` on exactly these. Secrets are left out on purpose:
    listing Secrets is reading them."""
    protected_workloads: tuple[tuple[str, str], ...] = (
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "cronjobs"),
        ("batch", "jobs"),
        ("", "replicationcontrollers"),
    )
    """(group, resource) whose updates in protected namespaces need GitOps too (their
    controllers create children there that nobody else may create)."""
    guarded_crd_groups: tuple[str, ...] = ()
    """API groups whose CRDs may not be deleted while they have managed custom resources (the
    webhook lists them; it needs `list` on these groups). CRDs GitOps applies are managed
    themselves; this is for CRDs installed otherwise. Empty: no such check."""
    exempt_usernames: tuple[str, ...] = ()
    exempt_groups: tuple[str, ...] = ()
    break_glass_groups: tuple[str, ...] = ("gitwarden:break-glass",)
    default_mode: str = "enforce"
    namespace_modes: Mapping[str, str] = field(default_factory=dict)
    allow_dry_run: bool = False
    excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-node-lease")
    system_allowances: tuple[SystemAllowance, ...] = allowances.DEFAULT_SYSTEM_ALLOWANCES
    timeout_seconds: int = 3

    def __post_init__(self) -> None:
        for ns, mode in {"(default)": self.default_mode, **self.namespace_modes}.items():
            if mode not in MODES:
                raise ConfigError(f"modes: {ns}: unknown mode {mode!r} (expected one of {MODES})")
        if not 1 <= self.timeout_seconds <= 5:
            raise ConfigError("webhook.timeout_seconds must be between 1 and 5")
        if self.require_pod_bound_token and not self.gitops_usernames:
            raise ConfigError("gitops: require_pod_bound_token needs a GitOps identity")
        if self.verify_pod_live and not self.require_pod_bound_token:
            raise ConfigError("gitops: verify_pod_live needs require_pod_bound_token")
        for kind in self.cluster_scoped_kinds:
            if kind.group == UNGUARDABLE_GROUP:
                raise ConfigError(
                    f"cluster_scoped_kinds: {kind.kind} ({UNGUARDABLE_GROUP}) cannot be guarded: "
                    "the API server never sends admissionregistration objects to webhooks. "
                    "Deny their RBAC instead (see `gitwarden audit`)"
                )
        _check_identities(self)
        for a in self.system_allowances:
            _check_allowance(a, self.path_annotation)

    @property
    def gitops_usernames(self) -> tuple[str, ...]:
        """The usernames that are the GitOps identity."""
        own = f"system:serviceaccount:{self.namespace}:{self.gitops_service_account}"
        return (own, *self.extra_gitops_usernames)

    @property
    def parent_rules(self) -> tuple[ParentSubresource, ...]:
        """Every subresource decided on its parent: the configured ones and each */scale."""
        scale = tuple(
            ParentSubresource(g, r, "scale", ("UPDATE",)) for g, r in self.scale_resources
        )
        return (*self.parent_subresources, *scale)

    @property
    def parent_kinds(self) -> tuple[tuple[str, str], ...]:
        """(group, resource) the webhook reads metadata of: grant it `get` on exactly these."""
        return tuple(sorted({(p.group, p.resource) for p in self.parent_rules}))

    @property
    def never_blocked_namespaces(self) -> tuple[str, ...]:
        """Namespaces the webhook is never called for: the excluded ones and our own."""
        return tuple(dict.fromkeys((*self.excluded_namespaces, self.namespace)))

    def to_opa_data(self) -> dict[str, Any]:
        """The document the Rego policy reads at `data.gitwarden.admission`."""
        return {
            "managed_label": {"key": self.managed_label.key, "value": self.managed_label.value},
            "protected_namespace_label": {
                "key": self.protected_namespace_label.key,
                "value": self.protected_namespace_label.value,
            },
            "namespace": self.namespace,
            "protected_workloads": [
                {"group": g, "resource": r} for g, r in self.protected_workloads
            ],
            "gitops": {
                "service_account": self.gitops_service_account,
                "usernames": list(self.gitops_usernames),
                "verify_pod_live": self.verify_pod_live,
                "require_pod_bound_token": self.require_pod_bound_token,
                "pod_name_prefixes": list(self.pod_name_prefixes),
            },
            "repository": {
                "url": self.repository_url,
                "branch": self.repository_branch,
                "path_annotation": self.path_annotation,
                "default_path": self.default_path,
            },
            "cluster_scoped_kinds": [
                {"group": k.group, "kind": k.kind} for k in self.cluster_scoped_kinds
            ],
            "exemptions": {
                "usernames": list(self.exempt_usernames),
                "groups": list(self.exempt_groups),
            },
            "break_glass": {"groups": list(self.break_glass_groups)},
            "allow_dry_run": self.allow_dry_run,
            "modes": {"default": self.default_mode, "namespaces": dict(self.namespace_modes)},
            "system_allowances": [_allowance_data(a) for a in self.system_allowances],
        }


def _allowance_data(a: SystemAllowance) -> dict[str, Any]:
    data: dict[str, Any] = {"name": a.name}
    for key in allowances.LIST_FIELDS:
        value = getattr(a, key)
        if value:
            data[key] = list(value)
    for key in allowances.BOOL_FIELDS:
        if getattr(a, key):
            data[key] = True
    return data


def _check_identities(c: AdmissionConfig) -> None:
    """No exemption, break-glass group, GitOps name or allowance may match a crowd."""
    for where, groups in (
        ("exemptions.groups", c.exempt_groups),
        ("break_glass.groups", c.break_glass_groups),
    ):
        for group in groups:
            if _is_broad(group):
                raise ConfigError(
                    f"{where}: {group!r} holds many identities (every service account, "
                    "node or user); name one group of people instead"
                )
    for where, users in (
        ("exemptions.usernames", c.exempt_usernames),
        ("gitops.extra_usernames", c.extra_gitops_usernames),
        *((f"system_allowances: {a.name}", a.usernames) for a in c.system_allowances),
    ):
        if ANONYMOUS_USER in users:
            raise ConfigError(
                f"{where}: {ANONYMOUS_USER} is anyone without credentials; name one identity"
            )


def _check_allowance(a: SystemAllowance, path_annotation: str) -> None:
    where = f"system_allowances: {a.name}"
    if not a.usernames and not a.nodes:
        raise ConfigError(f"{where}: names no controller (usernames or nodes)")
    if ("metadata.labels" in a.changed_fields_within) != a.owner_labels:
        # Only a controller that copies its owner's labels may change labels, and even then
        # the policy keeps the managed label as it is.
        raise ConfigError(
            f"{where}: no controller may change labels of an object in scope, but one that "
            "copies its owner's (owner_labels with metadata.labels in changed_fields_within)"
        )
    for key in a.annotations_within:
        if key == path_annotation or key.startswith("gitwarden.dev/"):
            raise ConfigError(f"{where}: {key} is GitWarden's annotation; only GitOps sets it")


# ----------------------------------------------------------------------------- parsing


def load(path: Path) -> AdmissionConfig:
    """Read a YAML or JSON configuration file."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from exc
    return from_document(document or {}, source=str(path))


def from_document(document: Any, *, source: str = "configuration") -> AdmissionConfig:
    """Build the configuration from a parsed document; unknown keys are errors."""
    doc = configreader.Reader(document, source)
    gitops = doc.section("gitops")
    repo = doc.section("repository")
    exemptions = doc.section("exemptions")
    modes = doc.section("modes")
    hook = doc.section("webhook")
    kwargs: dict[str, Any] = {
        "namespace": doc.string("namespace"),
        "gitops_service_account": gitops.string("service_account"),
        "extra_gitops_usernames": gitops.strings("extra_usernames"),
        "require_pod_bound_token": gitops.boolean("require_pod_bound_token"),
        "pod_name_prefixes": gitops.strings("pod_name_prefixes"),
        "verify_pod_live": gitops.boolean("verify_pod_live"),
        "pod_labels": gitops.mapping("pod_labels"),
        "managed_label": _label(doc.label("managed_label")),
        "protected_namespace_label": _label(doc.label("protected_namespace_label")),
        "repository_url": repo.string("url"),
        "repository_branch": repo.string("branch"),
        "path_annotation": repo.string("path_annotation"),
        "default_path": repo.string("default_path"),
        "cluster_scoped_kinds": _each(ClusterKind, doc.kinds("cluster_scoped_kinds")),
        "scale_resources": doc.group_resources("scale_resources"),
        "namespace_content_kinds": doc.content_kinds("namespace_content_kinds"),
        "guarded_crd_groups": doc.strings("guarded_crd_groups"),
        "protected_workloads": doc.group_resources("protected_workloads"),
        "parent_subresources": _each(
            ParentSubresource, doc.parent_subresources("parent_subresources")
        ),
        "exempt_usernames": exemptions.strings("usernames"),
        "exempt_groups": exemptions.strings("groups"),
        "break_glass_groups": doc.section("break_glass").strings("groups"),
        "default_mode": modes.string("default"),
        "namespace_modes": modes.mapping("namespaces"),
        "allow_dry_run": doc.boolean("allow_dry_run"),
        "excluded_namespaces": doc.strings("excluded_namespaces"),
        "system_allowances": _allowances(doc.allowances("system_allowances")),
        "timeout_seconds": hook.integer("timeout_seconds"),
    }
    if "intercept_status" in (document if isinstance(document, dict) else {}):
        raise ConfigError(
            f"{source}.intercept_status: removed; */status writes of managed objects are always "
            "checked (controllers' writes that leave metadata alone are skipped in the API server)"
        )
    for reader in (doc, gitops, repo, exemptions, modes, hook):
        reader.reject_unknown()
    return AdmissionConfig(**{k: v for k, v in kwargs.items() if v is not None})


def _label(pair: tuple[str, str] | None) -> Label | None:
    return None if pair is None else Label(*pair)


def _each(make: Any, rows: tuple[tuple[Any, ...], ...] | None) -> tuple[Any, ...] | None:
    return None if rows is None else tuple(make(*row) for row in rows)


def _allowances(rows: tuple[dict[str, Any], ...] | None) -> tuple[SystemAllowance, ...] | None:
    return None if rows is None else tuple(SystemAllowance(**row) for row in rows)


def to_document(config: AdmissionConfig) -> dict[str, Any]:
    """The document `from_document` reads back into an equal `AdmissionConfig`."""
    c = config
    return {
        "namespace": c.namespace,
        "gitops": {
            "service_account": c.gitops_service_account,
            "extra_usernames": list(c.extra_gitops_usernames),
            "require_pod_bound_token": c.require_pod_bound_token,
            "pod_name_prefixes": list(c.pod_name_prefixes),
            "verify_pod_live": c.verify_pod_live,
            "pod_labels": dict(c.pod_labels),
        },
        "managed_label": {"key": c.managed_label.key, "value": c.managed_label.value},
        "protected_namespace_label": {
            "key": c.protected_namespace_label.key,
            "value": c.protected_namespace_label.value,
        },
        "repository": {
            "url": c.repository_url,
            "branch": c.repository_branch,
            "path_annotation": c.path_annotation,
            "default_path": c.default_path,
        },
        "cluster_scoped_kinds": [
            {"group": k.group, "kind": k.kind, "resource": k.resource}
            for k in c.cluster_scoped_kinds
        ],
        "scale_resources": [{"group": g, "resource": r} for g, r in c.scale_resources],
        "namespace_content_kinds": [
            {"group": g, "version": v, "resource": r} for g, v, r in c.namespace_content_kinds
        ],
        "parent_subresources": [
            {**dataclasses.asdict(p), "operations": list(p.operations)}
            for p in c.parent_subresources
        ],
        "guarded_crd_groups": list(c.guarded_crd_groups),
        "protected_workloads": [{"group": g, "resource": r} for g, r in c.protected_workloads],
        "exemptions": {"usernames": list(c.exempt_usernames), "groups": list(c.exempt_groups)},
        "break_glass": {"groups": list(c.break_glass_groups)},
        "modes": {"default": c.default_mode, "namespaces": dict(c.namespace_modes)},
        "allow_dry_run": c.allow_dry_run,
        "excluded_namespaces": list(c.excluded_namespaces),
        "system_allowances": [_allowance_data(a) for a in c.system_allowances],
        "webhook": {"timeout_seconds": c.timeout_seconds},
    }


def opa_data_json(config: AdmissionConfig) -> str:
    """The OPA data file (`{"gitwarden": {"admission": ...}}`) for `opa run`."""
    return json.dumps({"gitwarden": {"admission": config.to_opa_data()}}, indent=2, sort_keys=True)
