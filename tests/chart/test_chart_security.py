"""What the rendered chart grants and how its pods run, for every value set.

RBAC is read with the audit's own matcher (`reconciler.guard.rbac`) against the permissions
`gitwarden audit` calls dangerous (`reconciler.guard.checks`), so "no impersonation, no GitOps
tokens" means exactly what the audit means by it. The registration's safety properties
(failurePolicy, the namespaces never sent) are asserted on the rendered object itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.guard import checks, rbac
from tests.chart import render
from tests.e2e import reconcile_stack

VALUE_SETS = render.value_sets()
READ_VERBS = {"get", "list", "watch"}


def _rules(role: dict[str, Any]) -> tuple[rbac.Rule, ...]:
    return tuple(
        rbac.Rule(
            verbs=tuple(r["verbs"]),
            api_groups=tuple(r.get("apiGroups") or ()),
            resources=tuple(r.get("resources") or ()),
            resource_names=tuple(r.get("resourceNames") or ()),
        )
        for r in role.get("rules") or ()
    )


def _snapshot(docs: list[dict[str, Any]]) -> rbac.Snapshot:
    roles = tuple(
        rbac.Role(d["kind"], d["metadata"]["name"], _rules(d), d["metadata"].get("namespace", ""))
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    )
    bindings = tuple(
        rbac.Binding(
            d["kind"],
            d["metadata"]["name"],
            d["roleRef"]["kind"],
            d["roleRef"]["name"],
            tuple(
                rbac.Subject(s["kind"], s["name"], s.get("namespace", ""))
                for s in d.get("subjects") or ()
            ),
            d["metadata"].get("namespace", ""),
        )
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
    )
    return rbac.Snapshot(roles, bindings)


def _installation(docs: list[dict[str, Any]]) -> checks.Installation:
    admission = render.file_of(docs, "admission.yaml")
    return checks.Installation(
        namespace=render.NAMESPACE,
        gitops_service_account=admission["gitops"]["service_account"],
        webhook_configuration=render.one(docs, "ValidatingWebhookConfiguration")["metadata"][
            "name"
        ],
        exempt_usernames=tuple(admission["exemptions"]["usernames"]),
        exempt_groups=tuple(admission["exemptions"]["groups"]),
        break_glass_groups=tuple(admission["break_glass"]["groups"]),
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_nothing_in_the_chart_can_impersonate_or_mint_tokens_for_gitops(value_set: str) -> None:
    docs = render.documents(value_set)
    forbidden = {
        "impersonate-gitops",
        "impersonate-pod-extras",
        "impersonate-exempt",
        "gitops-token",
        "wildcard",
        "rbac-escalate",
        "mutating-webhooks",
    }
    perms = [p for p in checks.permissions(_installation(docs)) if p.id in forbidden]
    assert {p.id for p in perms} == forbidden
    held = rbac.holders(_snapshot(docs), [r for p in perms for r in p.requests])
    assert held == [], [(h.subject.username, h.request.describe(), h.via()) for h in held]
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "impersonate" not in rule["verbs"], role["metadata"]["name"]
            assert "*" not in rule["verbs"] + rule["apiGroups"]
            if "*" in rule["resources"]:
                # Only the webhook's look for custom resources of a guarded CRD group.
                assert rule["verbs"] == ["list"], role["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_webhook_may_only_read(value_set: str) -> None:
    docs = render.documents(value_set)
    roles = render.of(docs, "ClusterRole", "webhook") + render.of(docs, "Role", "webhook")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list"}, rule
            assert "secrets" not in rule["resources"]
    inst = _installation(docs)
    webhook_sa = next(s["metadata"]["name"] for s in render.of(docs, "ServiceAccount", "webhook"))
    dangerous = [r for p in checks.permissions(inst) for r in p.requests]
    held = [
        h
        for h in rbac.holders(_snapshot(docs), dangerous)
        if h.subject.name == webhook_sa and h.subject.kind == "ServiceAccount"
    ]
    assert held == [], [h.request.describe() for h in held]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_reconciler_writes_nothing_it_does_not_apply(value_set: str) -> None:
    docs = render.documents(value_set)
    roles = render.of(docs, "ClusterRole", "reconciler") + render.of(docs, "Role", "reconciler")
    for role in roles:
        for rule in role["rules"]:
            assert "serviceaccounts/token" not in rule["resources"]
            assert not {"escalate", "bind", "deletecollection"} & set(rule["verbs"])
            if "validatingwebhookconfigurations" in rule["resources"]:
                # The self-guard's restore of this release's configuration only.
                assert rule["resourceNames"] == [_installation(docs).webhook_configuration]
    own = render.one(docs, "Role", f"{_prefix(docs)}-reconciler")
    secrets = next(r for r in own["rules"] if r["resources"] == ["secrets"])
    # Sealing keys are added, never changed or deleted by the key service.
    assert set(secrets["verbs"]) == {"get", "list", "watch", "create"}


def _prefix(docs: list[dict[str, Any]]) -> str:
    return str(render.one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"])


def test_namespaced_scope_binds_apply_rules_only_in_the_listed_namespaces() -> None:
    docs = render.documents("namespaced-values.yaml")
    apply_bindings = [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and d["roleRef"]["name"].endswith("-reconciler-apply")
    ]
    assert sorted((d["kind"], d["metadata"].get("namespace")) for d in apply_bindings) == [
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]
    default = render.documents("default")
    assert [
        d["kind"]
        for d in default
        if d["kind"].endswith("Binding") and d["roleRef"]["name"].endswith("-reconciler-apply")
    ] == ["ClusterRoleBinding"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_registration_fails_closed_and_never_sees_system_namespaces(value_set: str) -> None:
    docs = render.documents(value_set)
    vwc = render.one(docs, "ValidatingWebhookConfiguration")
    assert len(vwc["webhooks"]) >= 5
    for hook in vwc["webhooks"]:
        assert hook["failurePolicy"] == "Fail", hook["name"]
        assert hook["sideEffects"] == "None"
        names = [c["name"] for c in hook["matchConditions"]]
        assert "not-lease-or-event" in names
        if "namespaceSelector" not in hook:
            # CRD deletes: cluster-scoped objects, which a namespaceSelector never filters.
            assert all(r["scope"] == "Cluster" for r in hook["rules"]), hook["name"]
            continue
        [expression] = hook["namespaceSelector"]["matchExpressions"][:1]
        if hook["name"].startswith("gitops-namespace."):
            # Only the creates that would forge the GitOps identity, in GitWarden's namespace.
            assert expression["operator"] == "In"
            assert expression["values"] == [render.NAMESPACE]
            assert names[-1] == "gitops-identity-at-stake"
            continue
        assert expression["key"] == "kubernetes.io/metadata.name"
        assert expression["operator"] == "NotIn"
        assert {"kube-system", "kube-node-lease", render.NAMESPACE} <= set(expression["values"])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_gitops_identity_skipped_in_the_api_server_is_the_reconcilers_account(
    value_set: str,
) -> None:
    docs = render.documents(value_set)
    admission = render.file_of(docs, "admission.yaml")
    [deployment] = render.of(docs, "Deployment", "reconciler")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert admission["gitops"]["service_account"] == account
    assert render.one(docs, "ServiceAccount", account)
    username = f"system:serviceaccount:{render.NAMESPACE}:{account}"
    conditions = {
        c["name"]: c["expression"]
        for c in render.one(docs, "ValidatingWebhookConfiguration")["webhooks"][0][
            "matchConditions"
        ]
    }
    if admission["gitops"]["verify_pod_live"]:
        # The webhook checks that the token's pod is alive: such requests are not skipped.
        assert "not-gitops-identity" not in conditions
    else:
        assert f'"{username}"' in conditions["not-gitops-identity"]


def _containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for deployment in render.every(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            found.append((deployment["metadata"]["name"], spec, container))
    return found


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_container_runs_unprivileged_on_a_read_only_root(value_set: str) -> None:
    containers = _containers(render.documents(value_set))
    assert len(containers) == 4  # webhook, opa and its data init container, reconciler
    for where, pod, container in containers:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        resources = container["resources"]
        assert resources["requests"]["cpu"]
        assert resources["requests"]["memory"]
        assert resources["limits"]["cpu"]
        assert resources["limits"]["memory"]
        assert "hostNetwork" not in pod
        assert "hostPID" not in pod


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_no_sealing_key_is_ever_rendered(value_set: str) -> None:
    """The key service makes sealing keys at run time; Helm never owns one, so no upgrade,
    rollback or uninstall can replace or delete the key that opens every SealedSecret."""
    docs = render.documents(value_set)
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert "sealedsecrets.bitnami.com/sealed-secrets-key" not in labels
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert all(
        s["type"] == "kubernetes.io/tls" and s["metadata"]["name"].endswith("-webhook-tls")
        for s in secrets
    )


@pytest.mark.parametrize("value_set", ["default", "namespaced-values.yaml"])
def test_reconciler_holds_what_a_measured_pass_needs(value_set: str) -> None:
    """Every grant of the e2e tests' reconciler role (what the audit log shows a pass uses),
    but the tests' own custom kind, is held by the chart's GitOps account."""
    docs = render.documents(value_set)
    account = render.file_of(docs, "admission.yaml")["gitops"]["service_account"]
    where = "team-a"  # a namespace the namespaced value set binds too
    requests = [
        rbac.Request(
            verb,
            group,
            resource.partition("/")[0],
            resource.partition("/")[2],
            namespace=where,
        )
        for rule in reconcile_stack.RECONCILER_RULES
        for group in rule["apiGroups"]
        if group != reconcile_stack.WIDGET_GROUP
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]
    held = {
        h.request
        for h in rbac.holders(_snapshot(docs), requests)
        if h.subject.name == account and h.subject.namespace == render.NAMESPACE
    }
    missing = [r.describe() for r in requests if r not in held]
    assert missing == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_the_reconciler_may_create_events_only_in_default(value_set: str) -> None:
    """Events about the cluster-scoped Sync live in `default`; nowhere else, and no patch."""
    docs = render.documents(value_set)
    account = render.file_of(docs, "admission.yaml")["gitops"]["service_account"]
    requests = [
        rbac.Request(verb, group, "events", "", namespace=namespace)
        for verb in ("create", "patch")
        for group in ("", "events.k8s.io")
        for namespace in ("default", "team-a", render.NAMESPACE)
    ]
    held = sorted(
        h.request.describe()
        for h in rbac.holders(_snapshot(docs), requests)
        if h.subject.name == account and h.subject.namespace == render.NAMESPACE
    )
    expected = [r.describe() for r in requests[:1]]
    assert held == expected
