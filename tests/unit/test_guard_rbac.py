"""RBAC matching and the audit's sorting, on plain values (the real authorizer agrees in e2e)."""

from __future__ import annotations

from reconciler.guard import audit, checks, rbac

INST = checks.Installation("gitwarden", "reconciler", "gitwarden")
ALICE = rbac.Subject("User", "alice")


def _cluster_role(name: str, *rules: rbac.Rule, **kw: object) -> rbac.Role:
    return rbac.Role("ClusterRole", name, rules, **kw)


def _crb(name: str, role: str, *subjects: rbac.Subject) -> rbac.Binding:
    return rbac.Binding("ClusterRoleBinding", name, "ClusterRole", role, subjects)


def test_star_slash_subresource_matches_but_resource_slash_star_does_not() -> None:
    """RBAC knows `*/exec`, not `pods/*` (no prefix wildcard), as the Go authorizer."""
    exec_request = rbac.Request("create", "", "pods", "exec", "gitwarden", any_name=True)
    assert rbac.Rule(("create",), ("",), ("*/exec",)).allows(exec_request)
    assert not rbac.Rule(("create",), ("",), ("pods/*",)).allows(exec_request)
    assert not rbac.Rule(("create",), ("",), ("pods",)).allows(exec_request)
    assert rbac.Rule(("*",), ("*",), ("*",)).allows(exec_request)


def test_resource_names_narrow_named_requests_and_never_match_creates() -> None:
    """A rule naming the GitOps SA grants its token; one naming another SA does not."""
    token = rbac.Request("create", "", "serviceaccounts", "token", "gitwarden", "reconciler")
    rule = rbac.Rule(("create",), ("",), ("serviceaccounts/token",), ("reconciler",))
    other = rbac.Rule(("create",), ("",), ("serviceaccounts/token",), ("webhook",))
    assert rule.allows(token)
    assert not other.allows(token)
    create_pods = rbac.Request("create", "", "pods", namespace="gitwarden")
    assert not rbac.Rule(("create",), ("",), ("pods",), ("x",)).allows(create_pods)


def test_any_name_requests_match_rules_that_list_names() -> None:
    """Impersonating the pod-name extra with one listed value is still forging a pod binding."""
    extra = rbac.Request(
        "impersonate", "authentication.k8s.io", "userextras", checks.POD_NAME_EXTRA, any_name=True
    )
    listed = rbac.Rule(
        ("impersonate",),
        ("authentication.k8s.io",),
        (f"userextras/{checks.POD_NAME_EXTRA}",),
        ("gitwarden-reconciler-0",),
    )
    assert listed.allows(extra)


def test_role_binding_grants_only_in_its_namespace_including_the_namespace_object() -> None:
    """A RoleBinding in gitwarden covers `namespaces/gitwarden`; one elsewhere covers nothing."""
    role = rbac.Role("ClusterRole", "ns-editor", (rbac.Rule(("patch",), ("",), ("namespaces",)),))
    here = rbac.Binding("RoleBinding", "b", "ClusterRole", "ns-editor", (ALICE,), "gitwarden")
    there = rbac.Binding("RoleBinding", "b", "ClusterRole", "ns-editor", (ALICE,), "team-a")
    patch_ns = rbac.Request("patch", "", "namespaces", namespace="gitwarden", name="gitwarden")
    found = rbac.holders(rbac.Snapshot((role,), (here, there)), [patch_ns])
    assert [(h.subject, h.binding.namespace) for h in found] == [(ALICE, "gitwarden")]


def test_aggregated_cluster_roles_are_resolved_transitively_and_cycles_end() -> None:
    """admin ← mid ← leaf: the leaf's rule reaches a binding of admin; a cycle terminates."""
    leaf = _cluster_role(
        "leaf",
        rbac.Rule(("impersonate",), ("",), ("serviceaccounts",)),
        labels={"agg": "mid"},
    )
    mid = _cluster_role(
        "mid",
        labels={"agg": "admin"},
        aggregation=(rbac.Selector({"agg": "mid"}),),
    )
    admin = _cluster_role(
        "admin",
        labels={"agg": "mid"},  # matched by mid's selector too: a cycle
        aggregation=(rbac.Selector({"agg": "admin"}),),
    )
    snapshot = rbac.Snapshot((leaf, mid, admin), (_crb("b", "admin", ALICE),))
    request = rbac.Request(
        "impersonate", "", "serviceaccounts", namespace="gitwarden", name="reconciler"
    )
    (holding,) = rbac.holders(snapshot, [request])
    assert holding.subject == ALICE
    assert holding.source == "ClusterRole leaf"
    assert "aggregates ClusterRole leaf" in holding.via()


def test_dangling_role_ref_grants_nothing() -> None:
    """A binding to a role that does not exist is listed but grants nothing."""
    snapshot = rbac.Snapshot((), (_crb("b", "gone", ALICE),))
    assert rbac.holders(snapshot, [rbac.Request("*", "*", "*")]) == []


def test_masters_always_reported_expected_identities_marked_and_wildcard_folded() -> None:
    """system:masters is unavoidable even without bindings; `*` holders get one row."""
    star = _cluster_role("star", rbac.Rule(("*",), ("*",), ("*",)))
    token = _cluster_role("token", rbac.Rule(("create",), ("",), ("serviceaccounts/token",)))
    gitops = rbac.Subject("ServiceAccount", "reconciler", "gitwarden")
    nodes = rbac.Subject("Group", "system:nodes")
    snapshot = rbac.Snapshot(
        (star, token),
        (
            _crb("star", "star", ALICE, gitops, rbac.Subject("Group", checks.MASTERS)),
            _crb("token", "token", nodes),
        ),
    )
    findings = audit.run(snapshot, checks.permissions(INST), checks.default_expected(INST))
    rows = {(f.subject.key, f.permission, f.status) for f in findings}
    assert rows == {
        ("group:system:masters", "everything", audit.UNAVOIDABLE),
        ("alice", "wildcard", audit.FINDING),
        ("system:serviceaccount:gitwarden:reconciler", "wildcard", audit.EXPECTED),
        ("group:system:nodes", "gitops-token", audit.EXPECTED),
    }
    assert not audit.nothing_unexpected(findings)
    assert audit.nothing_unexpected([f for f in findings if f.subject != ALICE])


def test_confirm_is_asked_with_a_name_the_rule_covers() -> None:
    """The SubjectAccessReview names a listed resourceName when the request has none."""
    role = _cluster_role(
        "extras",
        rbac.Rule(
            ("impersonate",),
            ("authentication.k8s.io",),
            (f"userextras/{checks.POD_NAME_EXTRA}",),
            ("gitwarden-reconciler-0",),
        ),
    )
    asked: list[tuple[str, str]] = []

    def confirm(subject: rbac.Subject, request: rbac.Request, name: str) -> bool:
        asked.append((request.combined_resource, name))
        return True

    snapshot = rbac.Snapshot((role,), (_crb("extras", "extras", ALICE),))
    findings = audit.run(snapshot, checks.permissions(INST), (), confirm)
    assert asked == [(f"userextras/{checks.POD_NAME_EXTRA}", "gitwarden-reconciler-0")]
    assert [f.confirmed for f in findings if f.subject == ALICE] == [True]


def test_parse_expected_names_one_identity_and_its_permissions() -> None:
    """`IDENTITY=a,b` lists permissions; a bare identity means all of them."""
    assert checks.parse_expected("bob=pods,pod-exec").permissions == ("pods", "pod-exec")
    assert checks.parse_expected("group:ops").covers("group:ops", "wildcard", "RoleBinding a/b")
    assert not checks.parse_expected("bob=pods").covers("bob", "wildcard", "RoleBinding a/b")


def test_a_bootstrap_controller_is_expected_only_through_its_own_binding() -> None:
    """The same permission granted to a controller by another binding is a finding."""
    gc = rbac.Subject("ServiceAccount", "generic-garbage-collector", "kube-system")
    role = _cluster_role("edit-secrets", rbac.Rule(("get",), ("",), ("secrets",)))
    own = _crb("system:controller:generic-garbage-collector", "edit-secrets", gc)
    extra = _crb("e2e-editors", "edit-secrets", gc)
    findings = audit.run(
        rbac.Snapshot((role,), (own, extra)),
        checks.permissions(INST),
        checks.default_expected(INST),
    )
    rows = {(f.via.split(" -> ")[0], f.status) for f in findings if f.subject == gc}
    assert rows == {
        ("ClusterRoleBinding system:controller:generic-garbage-collector", audit.EXPECTED),
        ("ClusterRoleBinding e2e-editors", audit.FINDING),
    }
