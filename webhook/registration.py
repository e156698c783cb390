"""The ValidatingWebhookConfiguration, derived from the same `AdmissionConfig` as the policy data.

Owns the API server's side of the contract: which requests are sent at all (rules,
namespaceSelector, objectSelector) and which are skipped before they leave the API server
(matchConditions in CEL: the GitOps identity, exempt users and groups, the controllers'
allowances that the request alone decides, Leases and Events of their own groups). Everything
skipped here is allowed by the policy too, so skipping it only saves the round trip and keeps
the cluster's own controllers independent of the webhook's health. The chart renders the
same document.
"""

from __future__ import annotations

import json
from typing import Any

from webhook import allowances, review
from webhook import config as config_mod

NAME = "gitwarden"
PATH = "/validate"
PROTECTED_NAMESPACE_PATH = "/validate/protected-namespace"
PARENT_PATH = "/validate/parent"
NAMESPACE_DELETE_PATH = "/validate/namespace-delete"
CRD_DELETE_PATH = "/validate/crd-delete"
OPERATIONS = ["CREATE", "UPDATE", "DELETE"]
# The reconciler's status kind (syncs.gitwarden.dev), spelled here so the two never import
# each other; a test checks that both sides agree.
SYNC_GROUP, SYNC_RESOURCE = "gitwarden.dev", "syncs"

_USER = "request.userInfo"
# Fields the API server omits when empty: read them through has(), or CEL fails the request.
_SUB = '(has(request.subResource) ? request.subResource : "")'
_NAME = '(has(request.name) ? request.name : "")'
_GROUPS = f"(has({_USER}.groups) ? {_USER}.groups : [])"
_NODE = (
    f"({_USER}.username.startsWith({json.dumps(allowances.NODE_USER_PREFIX)}) && "
    f"{json.dumps(allowances.NODES_GROUP)} in {_GROUPS})"
)
# A status write that leaves every guarded metadata field as it was.
_METADATA_UNCHANGED = (
    "object != null && oldObject != null && "
    '["labels", "annotations", "ownerReferences", "finalizers"].all(f, '
    "(f in object.metadata) == (f in oldObject.metadata) && "
    "(!(f in object.metadata) || object.metadata[f] == oldObject.metadata[f]))"
)


def _cel_list(values: tuple[str, ...]) -> str:
    # JSON string literals are valid CEL string literals (double quotes, backslash escapes).
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _gitops(config: config_mod.AdmissionConfig) -> str:
    gitops = f"{_USER}.username in {_cel_list(config.gitops_usernames)}"
    if config.require_pod_bound_token:
        pod = f"{_USER}.extra[{json.dumps(review.POD_NAME_EXTRA)}]"
        bound = f"has({_USER}.extra) && {json.dumps(review.POD_NAME_EXTRA)} in {_USER}.extra"
        if config.pod_name_prefixes:
            prefixes = " || ".join(
                f"p.startsWith({json.dumps(x)})" for x in config.pod_name_prefixes
            )
            bound += f" && {pod}.size() == 1 && {pod}.exists(p, {prefixes})"
        else:
            bound += f" && {pod}.size() == 1"
        gitops = f"{gitops} && {bound}"
    return gitops


def _allowance(a: allowances.SystemAllowance) -> str:
    """The CEL form of an allowance that identity and request names decide alone."""
    who = []
    if a.usernames:
        who.append(f"{_USER}.username in {_cel_list(a.usernames)}")
    if a.nodes:
        who.append(_NODE)
    parts = ["(" + " || ".join(who) + ")"]
    if a.operations:
        parts.append(f"request.operation in {_cel_list(a.operations)}")
    if a.subresources:
        parts.append(f"{_SUB} in {_cel_list(a.subresources)}")
    if a.api_groups:
        parts.append(f"request.resource.group in {_cel_list(a.api_groups)}")
    if a.resources:
        parts.append(f"request.resource.resource in {_cel_list(a.resources)}")
    if a.names:
        parts.append(f"{_NAME} in {_cel_list(a.names)}")
    if not a.operations or "UPDATE" in a.operations:
        # The policy lets no allowance change labels, nor metadata fields and annotations it
        # does not name (these name none): an update skipped here must leave them as they were.
        parts.append(
            _METADATA_UNCHANGED
            if a.operations == ("UPDATE",)
            else f'(request.operation != "UPDATE" || ({_METADATA_UNCHANGED}))'
        )
    return " && ".join(parts)


def match_conditions(config: config_mod.AdmissionConfig) -> list[dict[str, str]]:
    """CEL conditions; a request is sent to the webhook only when all are true.

    Everything the policy allows from the request alone is skipped here, so it never waits
    on the webhook and a webhook outage cannot break it: the GitOps identity, controllers'
    allowances that need no lookup (the HPA's scale, the scheduler's bindings, the kubelets'
    tokens, controllers' status writes that leave labels, annotations, owner references and
    finalizers as they were), and Leases and Events of their own API groups.
    """
    conditions = [
        {
            "name": "not-lease-or-event",
            "expression": (
                '!((request.resource.group == "coordination.k8s.io" && '
                'request.resource.resource == "leases") || '
                '(request.resource.group in ["", "events.k8s.io"] && '
                'request.resource.resource == "events"))'
            ),
        },
    ]
    if not config.verify_pod_live:
        # (With verify_pod_live the webhook checks that the token's pod is alive: not skipped.)
        gitops = {"name": "not-gitops-identity", "expression": f"!({_gitops(config)})"}
        conditions.insert(0, gitops)
    decided = [_allowance(a) for a in config.system_allowances if a.identity_only or a.status_only]
    if decided:
        conditions.append(
            {
                "name": "not-system-allowance",
                "expression": "!(" + " || ".join(f"({d})" for d in decided) + ")",
            }
        )
    if config.exempt_usernames:
        conditions.append(
            {
                "name": "not-exempt-user",
                "expression": f"!({_USER}.username in {_cel_list(config.exempt_usernames)})",
            }
        )
    if config.exempt_groups:
        groups = _cel_list(config.exempt_groups)
        conditions.append(
            {
                "name": "not-exempt-group",
                "expression": f"!({_GROUPS}.exists(g, g in {groups}))",
            }
        )
    return conditions


def _by_group(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for group, resource in pairs:
        grouped.setdefault(group, []).append(resource)
    return grouped


def _client_config(base: dict[str, Any], path: str) -> dict[str, Any]:
    """`base` is {"url": "https://host:port"} or {"service": {...}} plus an optional caBundle."""
    client: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain JSON
    if "url" in client:
        client["url"] = client["url"].rstrip("/") + path
    else:
        client["service"]["path"] = path
    return client


def _gitops_namespace_webhook(
    config: config_mod.AdmissionConfig,
    client_config: dict[str, Any],
    name: str,
    common: dict[str, Any],
) -> dict[str, Any]:
    """GitWarden's namespace is otherwise never sent; these creates would forge its identity.

    Only token requests for the GitOps service account and pods that would run as it (or, with
    pod-bound tokens, are named like the reconciler's) are sent, so an outage blocks nothing
    else there (the webhook's own pods included); the kubelets' token requests are skipped.
    """
    sa = json.dumps(config.gitops_service_account)
    pod = f'request.resource.resource == "pods" && {_SUB} == "" && object != null'
    runs_as = f"(has(object.spec.serviceAccountName) && object.spec.serviceAccountName == {sa})"
    named = [
        f"object.metadata.name.startsWith({json.dumps(p)})"
        for p in (config.pod_name_prefixes if config.require_pod_bound_token else ())
    ]
    at_stake = (
        f'({_SUB} == "token" && {_NAME} == {sa}) || ({pod} && ({" || ".join([runs_as, *named])}))'
    )
    conditions = [
        *common["matchConditions"],
        {"name": "gitops-identity-at-stake", "expression": at_stake},
    ]
    return {
        "name": f"gitops-namespace.{name}.gitwarden.dev",
        "clientConfig": _client_config(client_config, PATH),
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["*"],
                "resources": ["pods", "serviceaccounts/token"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": [config.namespace],
                }
            ]
        },
        **{**common, "matchConditions": conditions},
    }


def webhook_rbac_rules(config: config_mod.AdmissionConfig) -> list[dict[str, Any]]:
    """The ClusterRole rules the webhook's own identity needs, and nothing more.

    `get` on the parent kinds and on namespaces (their deletion mark), `list` on the kinds a
    namespace is searched for before it is deleted and on the guarded CRD groups.
    """
    gets = [*config.parent_kinds, ("", "namespaces")]
    lists = [(g, r) for g, _, r in config.namespace_content_kinds]
    lists += [(g, "*") for g in config.guarded_crd_groups]
    return [
        {"apiGroups": [g], "resources": sorted(res), "verbs": [verb]}
        for verb, pairs in (("get", gets), ("list", lists))
        for g, res in sorted(_by_group(tuple(dict.fromkeys(pairs))).items())
    ]


def validating_webhook_configuration(
    config: config_mod.AdmissionConfig,
    client_config: dict[str, Any],
    *,
    name: str = NAME,
) -> dict[str, Any]:
    """The whole ValidatingWebhookConfiguration object."""
    never = list(config.never_blocked_namespaces)
    not_excluded = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": never,
    }
    common: dict[str, Any] = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": config.timeout_seconds,
        "matchConditions": match_conditions(config),
    }
    label = config.managed_label
    webhooks: list[dict[str, Any]] = [
        {
            "name": f"managed.{name}.gitwarden.dev",
            "clientConfig": _client_config(client_config, PATH),
            "rules": [
                {
                    "operations": OPERATIONS,
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    # Every resource and subresource ("*/*" means both): a status write
                    # carries the whole object, and the API server stores its metadata
                    # changes (labels, owner references, finalizers) too.
                    "resources": ["*/*"],
                    "scope": "*",
                }
            ],
            "namespaceSelector": {"matchExpressions": [not_excluded]},
            # Matches when the object or the stored object carries the label, so removing the
            # label is itself checked.
            "objectSelector": {"matchLabels": {label.key: label.value}},
            **common,
        },
        {
            "name": f"protected-namespaces.{name}.gitwarden.dev",
            "clientConfig": _client_config(client_config, PROTECTED_NAMESPACE_PATH),
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": ["*"],
                    "apiVersions": ["*"],
                    "resources": ["*"],
                    "scope": "Namespaced",
                },
                # Workloads there spawn children that controllers create: editing an
                # unlabelled CronJob would otherwise create Jobs no one may create directly.
                *(
                    {
                        "operations": ["UPDATE"],
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": sorted(res),
                        "scope": "Namespaced",
                    }
                    for group, res in sorted(_by_group(config.protected_workloads).items())
                ),
            ],
            "namespaceSelector": {
                "matchExpressions": [
                    not_excluded,
                    {
                        "key": config.protected_namespace_label.key,
                        "operator": "In",
                        "values": [config.protected_namespace_label.value],
                    },
                ]
            },
            **common,
        },
    ]
    protected = config.protected_namespace_label
    namespace_rule = {
        "apiGroups": [""],
        "apiVersions": ["*"],
        "resources": ["namespaces"],
        "scope": "Cluster",
    }
    webhooks += [
        {
            # A protected namespace's own label changes and its deletion (removing the label
            # is caught too: the selector matches the stored object as well).
            "name": f"protected-namespace-objects.{name}.gitwarden.dev",
            "clientConfig": _client_config(client_config, PATH),
            "rules": [
                {"operations": ["UPDATE", "DELETE"], **namespace_rule},
                # Their status and finalize writes store the labels they carry, too.
                {
                    **namespace_rule,
                    "operations": ["UPDATE"],
                    "resources": ["namespaces/finalize", "namespaces/status"],
                },
            ],
            "namespaceSelector": {"matchExpressions": [not_excluded]},
            "objectSelector": {"matchLabels": {protected.key: protected.value}},
            **common,
        },
        {
            # Any other namespace delete: the webhook looks for managed objects inside.
            "name": f"namespace-deletes.{name}.gitwarden.dev",
            "clientConfig": _client_config(client_config, NAMESPACE_DELETE_PATH),
            "rules": [{"operations": ["DELETE"], **namespace_rule}],
            "namespaceSelector": {"matchExpressions": [not_excluded]},
            **common,
        },
    ]
    webhooks.append(_gitops_namespace_webhook(config, client_config, name, common))
    if config.guarded_crd_groups:
        # Only the configured groups' CRD deletes are sent (the webhook may list just those).
        in_groups = (
            f"oldObject != null && oldObject.spec.group in {_cel_list(config.guarded_crd_groups)}"
        )
        webhooks.append(
            {
                "name": f"crd-deletes.{name}.gitwarden.dev",
                "clientConfig": _client_config(client_config, CRD_DELETE_PATH),
                "rules": [
                    {
                        "operations": ["DELETE"],
                        "apiGroups": ["apiextensions.k8s.io"],
                        "apiVersions": ["*"],
                        "resources": ["customresourcedefinitions"],
                        "scope": "Cluster",
                    }
                ],
                **{
                    **common,
                    "matchConditions": [
                        *common["matchConditions"],
                        {
                            "name": "guarded-crd-group",
                            "expression": in_groups,
                        },
                    ],
                },
            }
        )
    if config.parent_rules:
        # Scale, Eviction, Binding, TokenRequest and CONNECT options carry none of their
        # parent's labels, so no objectSelector can find managed ones: these requests are all
        # sent and decided on the parent's metadata, which the webhook may read for exactly
        # these kinds (config.parent_kinds). A kind left out (a custom resource the webhook has
        # no RBAC for) is never sent, so it never fails closed on a lookup it cannot make.
        by_rule: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for rule in config.parent_rules:
            key = (rule.group, rule.operations)
            by_rule.setdefault(key, []).append(f"{rule.resource}/{rule.subresource}")
        webhooks.insert(
            1,
            {
                "name": f"parent.{name}.gitwarden.dev",
                "clientConfig": _client_config(client_config, PARENT_PATH),
                "rules": [
                    {
                        "operations": list(operations),
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": sorted(set(res)),
                        "scope": "Namespaced",
                    }
                    for (group, operations), res in sorted(by_rule.items())
                ],
                "namespaceSelector": {"matchExpressions": [not_excluded]},
                **common,
            },
        )
    if config.cluster_scoped_kinds:
        groups: dict[str, list[str]] = {}
        for kind in config.cluster_scoped_kinds:
            # And its status: a status write stores the labels, annotations, owner references
            # and finalizers it carries (controllers' metadata-preserving ones are skipped).
            groups.setdefault(kind.group, []).extend((kind.resource, f"{kind.resource}/status"))
        webhooks.append(
            {
                "name": f"cluster-kinds.{name}.gitwarden.dev",
                "clientConfig": _client_config(client_config, PATH),
                "rules": [
                    {
                        "operations": OPERATIONS,
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": sorted(set(res)),
                        "scope": "Cluster",
                    }
                    for group, res in sorted(groups.items())
                ],
                # Namespace objects are matched against their own labels: keep ours and
                # kube-system's out even if "namespaces" is configured as a guarded kind.
                "namespaceSelector": {"matchExpressions": [not_excluded]},
                **common,
            }
        )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "gitwarden"}},
        "webhooks": webhooks,
    }
