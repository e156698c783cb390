"""The ValidatingWebhookConfiguration, derived from the same `AdmissionConfig` as the policy data.

Owns the API server's side of the contract: which requests are sent at all (rules,
namespaceSelector, objectSelector) and which are skipped before they leave the API server
(matchConditions in CEL: the GitOps identity, exempt users and groups, Leases and Events).
The GitOps identity and the exemptions are allowed by the policy too, so skipping them only
saves the round trip; Leases and Events are never GitOps material and are left alone so that
leader election and event recording can never wait on the webhook. The chart renders the
same document.
"""

from __future__ import annotations

import json
from typing import Any

from webhook import config as config_mod
from webhook import review

NAME = "gitwarden"
PATH = "/validate"
PROTECTED_NAMESPACE_PATH = "/validate/protected-namespace"
SCALE_PATH = "/validate/scale"
OPERATIONS = ["CREATE", "UPDATE", "DELETE"]
# The reconciler's status kind (syncs.gitwarden.dev), spelled here so the two never import
# each other; a test checks that both sides agree.
SYNC_GROUP, SYNC_RESOURCE = "gitwarden.dev", "syncs"


def _cel_list(values: tuple[str, ...]) -> str:
    # JSON string literals are valid CEL string literals (double quotes, backslash escapes).
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def match_conditions(config: config_mod.AdmissionConfig) -> list[dict[str, str]]:
    """CEL conditions; a request is sent to the webhook only when all are true."""
    user = "request.userInfo"
    gitops = f"{user}.username in {_cel_list(config.gitops_usernames)}"
    if config.require_pod_bound_token:
        pod = f"{user}.extra[{json.dumps(review.POD_NAME_EXTRA)}]"
        bound = f"has({user}.extra) && {json.dumps(review.POD_NAME_EXTRA)} in {user}.extra"
        if config.pod_name_prefixes:
            prefixes = " || ".join(
                f"p.startsWith({json.dumps(x)})" for x in config.pod_name_prefixes
            )
            bound += f" && {pod}.size() == 1 && {pod}.exists(p, {prefixes})"
        else:
            bound += f" && {pod}.size() == 1"
        gitops = f"{gitops} && {bound}"
    conditions = [
        {"name": "not-gitops-identity", "expression": f"!({gitops})"},
        {
            "name": "not-lease-or-event",
            "expression": '!(request.resource.resource in ["leases", "events"])',
        },
    ]
    if config.exempt_usernames:
        conditions.append(
            {
                "name": "not-exempt-user",
                "expression": f"!({user}.username in {_cel_list(config.exempt_usernames)})",
            }
        )
    if config.exempt_groups:
        groups = _cel_list(config.exempt_groups)
        conditions.append(
            {
                "name": "not-exempt-group",
                "expression": f"!(has({user}.groups) && {user}.groups.exists(g, g in {groups}))",
            }
        )
    return conditions


def _client_config(base: dict[str, Any], path: str) -> dict[str, Any]:
    """`base` is {"url": "https://host:port"} or {"service": {...}} plus an optional caBundle."""
    client: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy of plain JSON
    if "url" in client:
        client["url"] = client["url"].rstrip("/") + path
    else:
        client["service"]["path"] = path
    return client


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
    resources = ["*", "*/status"] if config.intercept_status else ["*"]
    rules: list[dict[str, Any]] = [
        {
            "operations": OPERATIONS,
            "apiGroups": ["*"],
            "apiVersions": ["*"],
            "resources": resources,
            "scope": "*",
        }
    ]
    if not config.intercept_status:
        # The reconciler's Sync status holds the inventory and the last applied commit, which
        # steer pruning and the no-op skip: its status is always checked, even when other
        # objects' status writes are left to controllers.
        rules.append(
            {
                "operations": ["UPDATE"],
                "apiGroups": [SYNC_GROUP],
                "apiVersions": ["*"],
                "resources": [f"{SYNC_RESOURCE}/status"],
                "scope": "Cluster",
            }
        )
    label = config.managed_label
    webhooks: list[dict[str, Any]] = [
        {
            "name": f"managed.{name}.gitwarden.dev",
            "clientConfig": _client_config(client_config, PATH),
            "rules": rules,
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
                }
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
    if config.scale_resources:
        # A Scale object has none of its parent's labels, so no objectSelector can find
        # managed ones: */scale updates of the configured kinds are all sent and decided on the
        # parent's metadata, which the webhook may read for exactly these kinds. A kind left out
        # (a custom resource the webhook has no RBAC for) is never sent, so its HPA keeps
        # working instead of failing closed on a lookup the webhook is not allowed to make.
        by_group: dict[str, list[str]] = {}
        for group, resource in config.scale_resources:
            by_group.setdefault(group, []).append(f"{resource}/scale")
        webhooks.insert(
            1,
            {
                "name": f"scale.{name}.gitwarden.dev",
                "clientConfig": _client_config(client_config, SCALE_PATH),
                "rules": [
                    {
                        "operations": ["UPDATE"],
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": sorted(res),
                        "scope": "Namespaced",
                    }
                    for group, res in sorted(by_group.items())
                ],
                "namespaceSelector": {"matchExpressions": [not_excluded]},
                **common,
            },
        )
    if config.cluster_scoped_kinds:
        groups: dict[str, list[str]] = {}
        for kind in config.cluster_scoped_kinds:
            groups.setdefault(kind.group, []).append(kind.resource)
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
