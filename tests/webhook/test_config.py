"""The admission configuration: parsing, its OPA rendering, and the webhook registration."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webhook import reviews
from webhook import config, registration

CONFIG_FILE = Path(__file__).with_name("admission-config.yaml")


def test_golden_opa_data_is_the_rendering_of_the_test_configuration() -> None:
    """The Rego tests' configuration is exactly what the loader renders from the YAML file."""
    rendered = config.load(CONFIG_FILE).to_opa_data()
    golden = reviews.golden()["config"]
    # The golden file adds one invalid mode on purpose (the Rego test for bad data); the
    # loader refuses it, as test_unknown_mode_is_refused shows.
    assert golden["modes"]["namespaces"].pop("team-typo") == "enforec"
    assert rendered == golden


def test_defaults_name_the_service_account_in_our_namespace() -> None:
    """The GitOps identity defaults to the reconciler's service account."""
    c = config.AdmissionConfig(namespace="gw", gitops_service_account="sync")
    assert c.gitops_usernames == ("system:serviceaccount:gw:sync",)
    assert c.never_blocked_namespaces == ("kube-system", "kube-node-lease", "gw")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"modes": {"default": "block"}}, "unknown mode 'block'"),
        ({"modes": {"namespaces": {"a": "enforec"}}}, "a: unknown mode 'enforec'"),
        ({"gitops": {"service_acount": "x"}}, "configuration.gitops: unknown keys service_acount"),
        ({"exemptions": {"groups": "ops"}}, "exemptions.groups: expected a list of strings"),
        ({"webhook": {"timeout_seconds": 10}}, "timeout_seconds must be between 1 and 5"),
        ({"cluster_scoped_kinds": [{"kind": "ClusterRole"}]}, "group, kind and resource"),
        ({"allow_dry_run": "yes"}, "allow_dry_run: expected true or false"),
        ([], "expected a mapping"),
    ],
    ids=["mode", "namespace-mode", "typo", "type", "timeout", "kind", "bool", "list"],
)
def test_invalid_documents_are_refused_with_the_field(document: object, message: str) -> None:
    """Every invalid configuration names the offending field."""
    with pytest.raises(config.ConfigError, match=message):
        config.from_document(document)


def test_unknown_mode_is_refused() -> None:
    """The loader never lets an unknown mode reach the policy."""
    with pytest.raises(config.ConfigError):
        config.AdmissionConfig(namespace_modes={"x": "enforec"})


def _hooks() -> dict[str, dict[str, object]]:
    c = config.load(CONFIG_FILE)
    vwc = registration.validating_webhook_configuration(c, {"url": "https://127.0.0.1:9443"})
    return {h["name"]: h for h in vwc["webhooks"]}


def test_registration_is_safe_by_construction() -> None:
    """Every webhook fails closed, has no side effects, v1 only, and a short timeout."""
    for hook in _hooks().values():
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert isinstance(hook["timeoutSeconds"], int)
        assert hook["timeoutSeconds"] <= 5
        selector = hook["namespaceSelector"]["matchExpressions"][0]
        if str(hook["name"]).startswith("gitops-namespace."):
            # Only there, and only the creates that would forge GitWarden's identity.
            assert selector == {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": ["gitwarden"],
            }
            assert hook["matchConditions"][-1]["name"] == "gitops-identity-at-stake"
            continue
        assert selector["operator"] == "NotIn"
        assert {"kube-system", "gitwarden"} <= set(selector["values"])


def test_registration_paths_and_selectors() -> None:
    """Managed objects by label, protected-namespace creates by namespace label, guarded kinds."""
    hooks = _hooks()
    managed = hooks["managed.gitwarden.gitwarden.dev"]
    assert managed["clientConfig"] == {"url": "https://127.0.0.1:9443/validate"}
    assert managed["objectSelector"] == {"matchLabels": {"gitwarden.dev/managed": "true"}}
    protected = hooks["protected-namespaces.gitwarden.gitwarden.dev"]
    assert protected["clientConfig"] == {
        "url": "https://127.0.0.1:9443/validate/protected-namespace"
    }
    assert protected["rules"][0]["operations"] == ["CREATE"]
    assert managed["rules"][0]["resources"] == ["*/*"]
    parent = hooks["parent.gitwarden.gitwarden.dev"]
    assert parent["clientConfig"] == {"url": "https://127.0.0.1:9443/validate/parent"}
    assert "objectSelector" not in parent
    assert parent["rules"] == [
        {
            "operations": ["CONNECT"],
            "apiGroups": [""],
            "apiVersions": ["*"],
            "resources": ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
            "scope": "Namespaced",
        },
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["*"],
            "resources": ["pods/binding", "pods/eviction", "serviceaccounts/token"],
            "scope": "Namespaced",
        },
        {
            "operations": ["UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["*"],
            "resources": ["replicationcontrollers/scale"],
            "scope": "Namespaced",
        },
        {
            "operations": ["UPDATE"],
            "apiGroups": ["apps"],
            "apiVersions": ["*"],
            "resources": ["deployments/scale", "replicasets/scale", "statefulsets/scale"],
            "scope": "Namespaced",
        },
    ]
    kinds = hooks["cluster-kinds.gitwarden.gitwarden.dev"]
    assert kinds["rules"] == [
        {
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "apiGroups": ["apiextensions.k8s.io"],
            "apiVersions": ["*"],
            # And their status, which stores the metadata it carries too.
            "resources": ["customresourcedefinitions", "customresourcedefinitions/status"],
            "scope": "Cluster",
        },
        {
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "apiGroups": ["rbac.authorization.k8s.io"],
            "apiVersions": ["*"],
            "resources": [
                "clusterrolebindings",
                "clusterrolebindings/status",
                "clusterroles",
                "clusterroles/status",
            ],
            "scope": "Cluster",
        },
    ]


def test_match_conditions_skip_gitops_and_exemptions() -> None:
    """CEL skips the GitOps identity and exempt users before the request leaves the API server."""
    conditions = {
        c["name"]: c["expression"] for c in registration.match_conditions(config.load(CONFIG_FILE))
    }
    assert conditions["not-gitops-identity"] == (
        '!(request.userInfo.username in ["system:serviceaccount:gitwarden:reconciler"])'
    )
    assert "platform:exempt" in conditions["not-exempt-group"]
    assert "system:serviceaccount:platform:operator" in conditions["not-exempt-user"]


def test_match_condition_requires_the_pod_binding_when_configured() -> None:
    """With pod-bound tokens required, only a token bound to a reconciler pod is skipped."""
    c = config.AdmissionConfig(require_pod_bound_token=True, pod_name_prefixes=("gw-rec-",))
    gitops = registration.match_conditions(c)[0]["expression"]
    assert '"authentication.kubernetes.io/pod-name" in request.userInfo.extra' in gitops
    assert 'p.startsWith("gw-rec-")' in gitops


def test_parent_kinds_are_configurable_and_can_be_turned_off() -> None:
    """Only the listed parents' subresources are sent; empty lists register no parent webhook."""
    custom = config.from_document(
        {
            "scale_resources": [{"group": "argoproj.io", "resource": "rollouts"}],
            "parent_subresources": [],
        }
    )
    vwc = registration.validating_webhook_configuration(custom, {"url": "https://h:1"})
    parent = next(h for h in vwc["webhooks"] if h["name"].startswith("parent."))
    assert parent["rules"][0]["apiGroups"] == ["argoproj.io"]
    assert parent["rules"][0]["resources"] == ["rollouts/scale"]
    assert custom.parent_kinds == (("argoproj.io", "rollouts"),)
    off = config.from_document({"scale_resources": [], "parent_subresources": []})
    names = [
        h["name"]
        for h in registration.validating_webhook_configuration(off, {"url": "https://h:1"})[
            "webhooks"
        ]
    ]
    assert not any(n.startswith("parent.") for n in names)
    with pytest.raises(config.ConfigError, match=r"scale_resources\[0\]: group and resource"):
        config.from_document({"scale_resources": [{"resource": "rollouts"}]})


def test_webhook_needs_get_on_exactly_the_parent_kinds() -> None:
    """The default parents are pods, service accounts and the scalable workloads, nothing else."""
    assert config.AdmissionConfig().parent_kinds == (
        ("", "pods"),
        ("", "replicationcontrollers"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "cluster_scoped_kinds": [
                    {
                        "group": "admissionregistration.k8s.io",
                        "kind": "ValidatingWebhookConfiguration",
                        "resource": "validatingwebhookconfigurations",
                    }
                ]
            },
            "never sends admissionregistration objects to webhooks",
        ),
        (
            {"system_allowances": [{"name": "x", "groups": ["system:serviceaccounts"]}]},
            r"system_allowances\[0\]\.groups: allowances name each controller by username",
        ),
        ({"system_allowances": [{"name": "x"}]}, "x: names no controller"),
        (
            {
                "system_allowances": [
                    {"name": "x", "usernames": ["u"], "changed_fields_within": ["metadata.labels"]}
                ]
            },
            "no controller may change labels",
        ),
        (
            {
                "system_allowances": [
                    {"name": "x", "usernames": ["u"], "annotations_within": ["gitwarden.dev/x"]}
                ]
            },
            "is GitWarden's annotation",
        ),
        ({"exemptions": {"groups": ["system:serviceaccounts:ci"]}}, "holds many identities"),
        ({"break_glass": {"groups": ["system:authenticated"]}}, "holds many identities"),
        # Every request without credentials, and every holder of a (shared) bootstrap token.
        ({"exemptions": {"groups": ["system:unauthenticated"]}}, "holds many identities"),
        (
            {"break_glass": {"groups": ["system:bootstrappers:kubeadm:default-node-token"]}},
            "holds many identities",
        ),
        ({"exemptions": {"usernames": ["system:anonymous"]}}, "anyone without credentials"),
        ({"gitops": {"extra_usernames": ["system:anonymous"]}}, "anyone without credentials"),
        (
            {"system_allowances": [{"name": "x", "usernames": ["system:anonymous"]}]},
            "anyone without credentials",
        ),
        ({"intercept_status": True}, "intercept_status: removed"),
    ],
    ids=[
        "admissionregistration",
        "group",
        "nobody",
        "labels",
        "our-annotation",
        "exempt-sa",
        "break-glass-all",
        "exempt-unauthenticated",
        "break-glass-bootstrappers",
        "exempt-anonymous",
        "gitops-anonymous",
        "allowance-anonymous",
        "intercept-status",
    ],
)
def test_unsafe_configurations_are_refused(document: object, message: str) -> None:
    """Guards that could never work, and allowances that match a crowd, are refused."""
    with pytest.raises(config.ConfigError, match=message):
        config.from_document(document)


def _names_a_group_of_service_accounts(allowance: dict[str, object]) -> bool:
    users = allowance.get("usernames", [])
    assert isinstance(users, list)
    return "groups" in allowance or any(
        u == "system:serviceaccounts" or u.startswith("system:serviceaccounts:") for u in users
    )


def test_no_allowance_matches_a_group_of_service_accounts() -> None:
    """Defaults and golden data name controllers one by one; only kubelets match by kind."""
    golden = reviews.golden()["config"]["system_allowances"]
    defaults = config.AdmissionConfig().to_opa_data()["system_allowances"]
    for allowance in [*golden, *defaults]:
        assert not _names_a_group_of_service_accounts(allowance), allowance["name"]
        for user in allowance.get("usernames", []):
            assert user.startswith(
                ("system:serviceaccount:kube-system:", "system:kube-", "system:apiserver")
            ), user


def test_document_round_trips() -> None:
    """to_document is what from_document reads back (the e2e stack and chart write it)."""
    c = config.load(CONFIG_FILE)
    assert config.from_document(config.to_document(c)) == c
    assert config.from_document(config.to_document(config.AdmissionConfig())) == (
        config.AdmissionConfig()
    )


def _conditions(c: config.AdmissionConfig) -> dict[str, str]:
    return {m["name"]: m["expression"] for m in registration.match_conditions(c)}


def test_match_conditions_skip_what_identity_alone_decides() -> None:
    """HPA scale, scheduler bindings, kubelet tokens, metadata-preserving status writes."""
    cel = _conditions(config.AdmissionConfig())["not-system-allowance"]
    assert '"system:serviceaccount:kube-system:horizontal-pod-autoscaler"' in cel
    assert '"scale"' in cel
    assert '"binding"' in cel
    assert 'request.userInfo.username.startsWith("system:node:")' in cel
    assert "object.metadata[f] == oldObject.metadata[f]" in cel
    # Allowances that need the object's owners or the namespace's phase are the webhook's.
    assert "generic-garbage-collector" not in cel


@pytest.mark.parametrize("name", ["root-ca-publisher", "hpa-scale"])
def test_skipped_updates_leave_guarded_metadata_unchanged(name: str) -> None:
    """An allowance decided in the API server may update only as the policy would allow it.

    Before: the root-CA publisher's UPDATE of kube-root-ca.crt was skipped whatever it changed,
    so it could remove the managed label or rewrite the source path, which the policy denies
    (no allowance may change labels, nor annotations it does not name).
    """
    (allowance,) = (a for a in config.AdmissionConfig().system_allowances if a.name == name)
    cel = _conditions(config.AdmissionConfig(system_allowances=(allowance,)))
    assert "object.metadata[f] == oldObject.metadata[f]" in cel["not-system-allowance"]


def test_lease_and_event_skips_match_their_api_groups() -> None:
    """A custom resource whose plural is `events` (group example.com) is still sent."""
    cel = _conditions(config.AdmissionConfig())["not-lease-or-event"]
    assert 'request.resource.group == "coordination.k8s.io"' in cel
    assert 'request.resource.group in ["", "events.k8s.io"]' in cel


def test_verified_pod_binding_is_not_skipped_in_the_api_server() -> None:
    """With verify_pod_live the webhook must see GitOps requests to check the pod is alive."""
    c = config.AdmissionConfig(
        require_pod_bound_token=True, pod_name_prefixes=("gw-rec-",), verify_pod_live=True
    )
    assert "not-gitops-identity" not in _conditions(c)
    with pytest.raises(config.ConfigError, match="verify_pod_live needs require_pod_bound_token"):
        config.AdmissionConfig(verify_pod_live=True)


def test_crd_deletes_are_sent_only_for_guarded_groups() -> None:
    """No groups: no webhook; with groups, CEL sends only their CRDs' deletes."""
    assert not any(n.startswith("crd-deletes.") for n in _hooks())
    c = config.from_document({"guarded_crd_groups": ["example.com"]})
    assert config.from_document(config.to_document(c)) == c
    vwc = registration.validating_webhook_configuration(c, {"url": "https://h:1"})
    hook = next(h for h in vwc["webhooks"] if h["name"].startswith("crd-deletes."))
    assert hook["clientConfig"] == {"url": "https://h:1/validate/crd-delete"}
    assert hook["matchConditions"][-1]["expression"] == (
        'oldObject != null && oldObject.spec.group in ["example.com"]'
    )


def test_workload_updates_in_protected_namespaces_are_sent() -> None:
    """CREATE of anything, UPDATE of the workloads whose controllers create children."""
    rules = _hooks()["protected-namespaces.gitwarden.gitwarden.dev"]["rules"]
    assert isinstance(rules, list)
    updates = {
        g: r["resources"] for r in rules if r["operations"] == ["UPDATE"] for g in r["apiGroups"]
    }
    assert updates == {
        "": ["replicationcontrollers"],
        "apps": ["daemonsets", "deployments", "replicasets", "statefulsets"],
        "batch": ["cronjobs", "jobs"],
    }


def test_webhook_rbac_is_get_on_parents_and_namespaces_and_list_on_searched_kinds() -> None:
    """No Secrets, no writes, nothing beyond the configured kinds."""
    rules = registration.webhook_rbac_rules(config.AdmissionConfig())
    gets = {
        (g, r)
        for rule in rules
        if rule["verbs"] == ["get"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    lists = {
        (g, r)
        for rule in rules
        if rule["verbs"] == ["list"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert gets == {*config.AdmissionConfig().parent_kinds, ("", "namespaces")}
    assert ("", "secrets") not in gets | lists
    assert all(rule["verbs"] in (["get"], ["list"]) for rule in rules)
    assert ("", "configmaps") in lists


def test_protected_namespaces_status_and_finalize_writes_are_sent() -> None:
    """Both store the labels they carry: removing the protected label through them is checked."""
    hook = _hooks()["protected-namespace-objects.gitwarden.gitwarden.dev"]
    rules = hook["rules"]
    assert isinstance(rules, list)
    resources = {r for rule in rules if "UPDATE" in rule["operations"] for r in rule["resources"]}
    assert {"namespaces", "namespaces/status", "namespaces/finalize"} <= resources


@pytest.mark.parametrize(
    "admission", [config.AdmissionConfig(), config.load(CONFIG_FILE)], ids=["defaults", "test"]
)
def test_allowance_index_lists_exactly_each_rule_under_each_of_its_users(
    admission: config.AdmissionConfig,
) -> None:
    """The policy reads only the rules the index offers a user: none may be missing or extra."""
    data = admission.to_opa_data()
    rules, index = data["system_allowances"], data["system_allowance_index"]
    expected: dict[str, list[int]] = {}
    for i, rule in enumerate(rules):
        for user in rule.get("usernames", []):
            expected.setdefault(user, []).append(i)
    assert index["usernames"] == expected
    assert index["nodes"] == [i for i, rule in enumerate(rules) if rule.get("nodes")]
    assert index["nodes"]
    assert "system:serviceaccount:kube-system:deployment-controller" in expected
