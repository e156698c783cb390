"""The admission policy's configuration: who GitOps is, what is in scope, who is exempt.

Owns one value, `AdmissionConfig`, read from a YAML/JSON document (the chart's ConfigMap), and
the two things derived from it: the OPA data document the Rego policy reads at
`data.gitwarden.admission`, and (in `webhook.registration`) the ValidatingWebhookConfiguration.
Deriving both from one value keeps the API server's fast path and the policy in agreement.
It does no I/O beyond `load()` and holds no secrets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODES = ("enforce", "warn", "audit")


class ConfigError(ValueError):
    """The configuration document is invalid; the message names the field."""


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
class SystemAllowance:
    """One thing a system controller may do to an object in scope. Empty fields don't narrow."""

    name: str
    usernames: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    changed_fields_within: tuple[str, ...] = ()


SA_CONTROLLER = "system:serviceaccount:kube-system:"

# What a cluster needs from its own controllers (kube-controller-manager's RBAC in
# plugin/pkg/auth/authorizer/rbac/bootstrappolicy/controller_policy.go, and the kubelet):
# status writers, the HPA's */scale, garbage collection and namespace deletion (which may only
# touch finalizers/owner references on update), controllers' child objects, kubelet tokens.
DEFAULT_SYSTEM_ALLOWANCES: tuple[SystemAllowance, ...] = (
    SystemAllowance(
        "status-writers",
        usernames=("system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"),
        groups=("system:serviceaccounts", "system:nodes"),
        subresources=("status",),
    ),
    SystemAllowance(
        "hpa-scale",
        usernames=(SA_CONTROLLER + "horizontal-pod-autoscaler", "system:kube-controller-manager"),
        operations=("UPDATE",),
        subresources=("scale",),
    ),
    SystemAllowance(
        "garbage-collector",
        usernames=(SA_CONTROLLER + "generic-garbage-collector", "system:kube-controller-manager"),
        operations=("UPDATE", "DELETE"),
        subresources=("",),
        changed_fields_within=("metadata.finalizers", "metadata.ownerReferences"),
    ),
    SystemAllowance(
        "namespace-controller",
        usernames=(SA_CONTROLLER + "namespace-controller", "system:kube-controller-manager"),
        operations=("UPDATE", "DELETE"),
        changed_fields_within=("metadata.finalizers",),
    ),
    SystemAllowance(
        "controller-children",
        usernames=("system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"),
        groups=("system:serviceaccounts:kube-system",),
        resources=(
            "endpointslices",
            "endpoints",
            "events",
            "leases",
            "pods",
            "replicasets",
            "controllerrevisions",
            "jobs",
            "persistentvolumeclaims",
        ),
    ),
    # Every namespace gets these two from kube-controller-manager, protected ones included.
    SystemAllowance(
        "root-ca-publisher",
        usernames=(SA_CONTROLLER + "root-ca-cert-publisher", "system:kube-controller-manager"),
        resources=("configmaps",),
    ),
    SystemAllowance(
        "service-account-controller",
        usernames=(SA_CONTROLLER + "service-account-controller", "system:kube-controller-manager"),
        resources=("serviceaccounts",),
    ),
    SystemAllowance(
        "kubelet-tokens", groups=("system:nodes",), operations=("CREATE",), subresources=("token",)
    ),
)


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
    """(group, resource) whose */scale is guarded; the webhook needs `get` on exactly these."""
    exempt_usernames: tuple[str, ...] = ()
    exempt_groups: tuple[str, ...] = ()
    break_glass_groups: tuple[str, ...] = ("gitwarden:break-glass",)
    default_mode: str = "enforce"
    namespace_modes: Mapping[str, str] = field(default_factory=dict)
    allow_dry_run: bool = False
    intercept_status: bool = False
    """Send */status writes to the webhook too (the policy lets controllers write status)."""
    excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-node-lease")
    system_allowances: tuple[SystemAllowance, ...] = DEFAULT_SYSTEM_ALLOWANCES
    timeout_seconds: int = 3

    def __post_init__(self) -> None:
        for ns, mode in {"(default)": self.default_mode, **self.namespace_modes}.items():
            if mode not in MODES:
                raise ConfigError(f"modes: {ns}: unknown mode {mode!r} (expected one of {MODES})")
        if not 1 <= self.timeout_seconds <= 5:
            raise ConfigError("webhook.timeout_seconds must be between 1 and 5")
        if self.require_pod_bound_token and not self.gitops_usernames:
            raise ConfigError("gitops: require_pod_bound_token needs a GitOps identity")

    @property
    def gitops_usernames(self) -> tuple[str, ...]:
        """The usernames that are the GitOps identity."""
        own = f"system:serviceaccount:{self.namespace}:{self.gitops_service_account}"
        return (own, *self.extra_gitops_usernames)

    @property
    def never_blocked_namespaces(self) -> tuple[str, ...]:
        """Namespaces the webhook is never called for: the excluded ones and our own."""
        return tuple(dict.fromkeys((*self.excluded_namespaces, self.namespace)))

    def to_opa_data(self) -> dict[str, Any]:
        """The document the Rego policy reads at `data.gitwarden.admission`."""
        return {
            "managed_label": {"key": self.managed_label.key, "value": self.managed_label.value},
            "gitops": {
                "usernames": list(self.gitops_usernames),
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


# The narrowing fields of a SystemAllowance, as named in the configuration and the OPA data.
_ALLOWANCE_FIELDS = (
    "usernames",
    "groups",
    "operations",
    "subresources",
    "resources",
    "changed_fields_within",
)


def _allowance_data(a: SystemAllowance) -> dict[str, Any]:
    data: dict[str, Any] = {"name": a.name}
    for key in _ALLOWANCE_FIELDS:
        value = getattr(a, key)
        if value:
            data[key] = list(value)
    return data


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
    doc = _Reader(document, source)
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
        "managed_label": doc.label("managed_label"),
        "protected_namespace_label": doc.label("protected_namespace_label"),
        "repository_url": repo.string("url"),
        "repository_branch": repo.string("branch"),
        "path_annotation": repo.string("path_annotation"),
        "default_path": repo.string("default_path"),
        "cluster_scoped_kinds": doc.kinds("cluster_scoped_kinds"),
        "scale_resources": doc.scale_resources("scale_resources"),
        "exempt_usernames": exemptions.strings("usernames"),
        "exempt_groups": exemptions.strings("groups"),
        "break_glass_groups": doc.section("break_glass").strings("groups"),
        "default_mode": modes.string("default"),
        "namespace_modes": modes.mapping("namespaces"),
        "allow_dry_run": doc.boolean("allow_dry_run"),
        "intercept_status": doc.boolean("intercept_status"),
        "excluded_namespaces": doc.strings("excluded_namespaces"),
        "system_allowances": doc.allowances("system_allowances"),
        "timeout_seconds": hook.integer("timeout_seconds"),
    }
    for reader in (doc, gitops, repo, exemptions, modes, hook):
        reader.reject_unknown()
    return AdmissionConfig(**{k: v for k, v in kwargs.items() if v is not None})


class _Reader:
    """Typed access to one mapping of the document, remembering which keys were read."""

    def __init__(self, value: Any, where: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        self._value: dict[str, Any] = value
        self._where = where
        self._seen: set[str] = set()

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._value.get(key)

    def _fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self._where}.{key}: expected {expected}")

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._value) - self._seen)
        if unknown:
            raise ConfigError(f"{self._where}: unknown keys {', '.join(unknown)}")

    def section(self, key: str) -> _Reader:
        return _Reader(self._get(key), f"{self._where}.{key}")

    def string(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._get(key)
        if value is not None and not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def integer(self, key: str) -> int | None:
        value = self._get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._fail(key, "an integer")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def mapping(self, key: str) -> dict[str, str] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._fail(key, "a mapping of strings")
        return dict(value)

    def label(self, key: str) -> Label | None:
        value = self._get(key)
        if value is None:
            return None
        sub = _Reader(value, f"{self._where}.{key}")
        k, v = sub.string("key"), sub.string("value")
        sub.reject_unknown()
        if not k or v is None:
            raise self._fail(key, "{key, value}")
        return Label(k, v)

    def items(self, key: str, expected: str) -> list[_Reader] | None:
        """A reader for each mapping in the list at `key`."""
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._fail(key, expected)
        return [_Reader(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(value)]

    def kinds(self, key: str) -> tuple[ClusterKind, ...] | None:
        items = self.items(key, "a list of {group, kind, resource}")
        if items is None:
            return None
        kinds = []
        for sub in items:
            group, kind, resource = sub.string("group"), sub.string("kind"), sub.string("resource")
            sub.reject_unknown()
            if group is None or not kind or not resource:
                raise ConfigError(f"{sub.where}: group, kind and resource are required")
            kinds.append(ClusterKind(group, kind, resource))
        return tuple(kinds)

    def scale_resources(self, key: str) -> tuple[tuple[str, str], ...] | None:
        items = self.items(key, "a list of {group, resource}")
        if items is None:
            return None
        result = []
        for sub in items:
            group, resource = sub.string("group"), sub.string("resource")
            sub.reject_unknown()
            if group is None or not resource:
                raise ConfigError(f"{sub.where}: group and resource are required")
            result.append((group, resource))
        return tuple(result)

    def allowances(self, key: str) -> tuple[SystemAllowance, ...] | None:
        items = self.items(key, "a list of allowances")
        if items is None:
            return None
        result = []
        for sub in items:
            name = sub.string("name")
            if not name:
                raise ConfigError(f"{sub.where}.name is required")
            fields = {f: sub.strings(f) or () for f in _ALLOWANCE_FIELDS}
            sub.reject_unknown()
            result.append(SystemAllowance(name, **fields))
        return tuple(result)

    @property
    def where(self) -> str:
        """The path of this mapping in the document, for messages."""
        return self._where


def opa_data_json(config: AdmissionConfig) -> str:
    """The OPA data file (`{"gitwarden": {"admission": ...}}`) for `opa run`."""
    return json.dumps({"gitwarden": {"admission": config.to_opa_data()}}, indent=2, sort_keys=True)
