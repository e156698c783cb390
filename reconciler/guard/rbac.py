"""Who holds a permission, decided from listed RBAC objects as the RBAC authorizer decides it.

Owns the values for Roles, ClusterRoles and their bindings, the resolution of aggregated
ClusterRoles (done here rather than trusted from the stored rules, so a cluster without the
aggregation controller, or a role that was edited after aggregation, is still read right), and
the rule matching of Kubernetes' RBAC (wildcards, `*/subresource`, resourceNames, namespaces).
Pure: no cluster access; the adapter builds a `Snapshot` and the authorizer's own answer
(SubjectAccessReview) confirms what this finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ALL = "*"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Request:
    """One authorization question, shaped like a SubjectAccessReview's resourceAttributes.

    `any_name` asks whether the verb is allowed for *some* name: resourceNames then narrow the
    grant (reported) instead of deciding it, because the name an attacker needs (a pod's name,
    an extra's value) is one a rule can list.
    """

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    any_name: bool = False

    @property
    def combined_resource(self) -> str:
        """`resource/subresource` as RBAC rules spell it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        """`verb group/resource[/sub] [name] [in namespace]`, for tables."""
        what = f"{self.group}/{self.combined_resource}" if self.group else self.combined_resource
        text = f"{self.verb} {what}"
        if self.name:
            text += f" {self.name}"
        if self.namespace:
            text += f" in {self.namespace}"
        return text


@dataclass(frozen=True)
class Rule:
    """One PolicyRule (resource rules only; nonResourceURLs never defeat admission)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()

    def allows(self, request: Request) -> bool:
        """The RBAC authorizer's `RuleAllows` for a resource request."""
        return (
            _verb_matches(self.verbs, request.verb)
            and (ALL in self.api_groups or request.group in self.api_groups)
            and _resource_matches(self.resources, request)
            and (request.any_name or not self.resource_names or request.name in self.resource_names)
        )


def _verb_matches(verbs: tuple[str, ...], verb: str) -> bool:
    return ALL in verbs or verb in verbs


def _resource_matches(resources: tuple[str, ...], request: Request) -> bool:
    combined = request.combined_resource
    for resource in resources:
        if resource in (ALL, combined):
            return True
        # `*/scale` grants the scale subresource of every resource; `pods/*` grants nothing
        # extra: RBAC has no prefix wildcard.
        if request.subresource and resource == f"*/{request.subresource}":
            return True
    return False


@dataclass(frozen=True)
class Selector:
    """A label selector of an aggregation rule."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes label-selector semantics (an empty selector matches nothing here)."""
        if not self.match_labels and not self.match_expressions:
            return False  # the aggregation controller ignores empty selectors
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(_expression(labels, *e) for e in self.match_expressions)


def _expression(
    labels: Mapping[str, str], key: str, operator: str, values: tuple[str, ...]
) -> bool:
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not (present and labels[key] in values)
    if operator == "Exists":
        return present
    return operator == "DoesNotExist" and not present


@dataclass(frozen=True)
class Role:
    """A Role (namespace set) or ClusterRole (namespace empty)."""

    kind: str
    name: str
    rules: tuple[Rule, ...]
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    aggregation: tuple[Selector, ...] = ()

    @property
    def ref(self) -> str:
        """`Kind name` or `Kind namespace/name`."""
        return _ref(self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class Subject:
    """A binding subject: User, Group or ServiceAccount."""

    kind: str
    name: str
    namespace: str = ""

    @property
    def username(self) -> str:
        """The username the API server authenticates this subject as (empty for groups)."""
        if self.kind == "ServiceAccount":
            return f"{SA_PREFIX}{self.namespace}:{self.name}"
        return self.name if self.kind == "User" else ""

    @property
    def key(self) -> str:
        """How expected identities name it: a username, or `group:NAME`."""
        return f"group:{self.name}" if self.kind == "Group" else self.username


@dataclass(frozen=True)
class Binding:
    """A RoleBinding (namespace set) or ClusterRoleBinding."""

    kind: str
    name: str
    role_kind: str
    role_name: str
    subjects: tuple[Subject, ...]
    namespace: str = ""

    @property
    def ref(self) -> str:
        """`Kind name` or `Kind namespace/name`."""
        return _ref(self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class Snapshot:
    """Every Role, ClusterRole and binding listed at one moment."""

    roles: tuple[Role, ...]
    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class Holding:
    """`subject` may do `request` because of `binding` → `role` (rule from `source`)."""

    subject: Subject
    request: Request
    binding: Binding
    role: Role
    source: str
    """The role whose rule matched: `role` itself or a ClusterRole it aggregates."""
    resource_names: tuple[str, ...] = ()

    def via(self) -> str:
        """`binding → role (rule from the aggregated role)`, for tables."""
        same = self.role.name == self.binding.name
        text = f"{self.binding.ref} -> " + (
            f"{self.role.kind} (same name)" if same else self.role.ref
        )
        if self.source != self.role.ref:
            text += f" (aggregates {self.source})"
        if self.resource_names:
            text += f" [names: {', '.join(self.resource_names)}]"
        return text

    def sample_name(self) -> str:
        """A name the grant covers, for asking the authorizer to confirm it."""
        if self.request.name or not self.resource_names:
            return self.request.name
        return self.resource_names[0]


def effective_rules(snapshot: Snapshot) -> dict[str, tuple[tuple[Rule, str], ...]]:
    """Each role's rules, with aggregated ClusterRoles expanded; keyed by `Role.ref`."""
    cluster_roles = {r.name: r for r in snapshot.roles if not r.namespace}
    resolved: dict[str, tuple[tuple[Rule, str], ...]] = {}

    def expand(role: Role, seen: frozenset[str]) -> list[tuple[Rule, str]]:
        rules = [(rule, role.ref) for rule in role.rules]
        for other in cluster_roles.values():
            if other.name in seen or other is role:
                continue
            if any(selector.matches(other.labels) for selector in role.aggregation):
                rules.extend(expand(other, seen | {other.name}))
        return rules

    for role in snapshot.roles:
        unique = dict.fromkeys(expand(role, frozenset({role.name})))
        resolved[role.ref] = tuple(unique)
    return resolved


def holders(snapshot: Snapshot, requests: Iterable[Request]) -> list[Holding]:
    """Every (subject, request) a binding grants, with the binding and role that grant it."""
    rules = effective_rules(snapshot)
    by_ref = {r.ref: r for r in snapshot.roles}
    wanted = tuple(requests)
    found: list[Holding] = []
    for binding in snapshot.bindings:
        role_namespace = binding.namespace if binding.role_kind == "Role" else ""
        role = by_ref.get(Role(binding.role_kind, binding.role_name, (), role_namespace).ref)
        if role is None:
            continue  # a dangling roleRef grants nothing
        for request in wanted:
            # A RoleBinding grants only in its namespace; the Namespace object itself counts as
            # being "in" its own namespace, exactly as the API server's request info says.
            if binding.namespace and request.namespace != binding.namespace:
                continue
            for rule, source in rules[role.ref]:
                if rule.allows(request):
                    found.extend(
                        Holding(subject, request, binding, role, source, rule.resource_names)
                        for subject in binding.subjects
                    )
                    break
    return found


def _ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
