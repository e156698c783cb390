"""`gitwarden audit` against the real kube-apiserver: RBAC findings, confirmed by the authorizer.

Each test grants one made-up user a permission that defeats admission (through a Role or a
ClusterRole), runs the real command line in a child process, and reads its JSON; then removes
the grant and sees the finding go. Each test has its own GitWarden namespace, so grants made by
other tests of the session (the webhook stacks' editors) never decide an assertion here.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from reconciler.guard import checks, kube, rbac
from tests.e2e.webhook_stack import wait_until
from tests.harness import cli
from tests.harness.controlplane import ControlPlane, Credentials, free_port, running_control_plane
from webhook import config as config_mod
from webhook import registration

pytestmark = pytest.mark.cluster


@dataclass
class Audit:
    """One installation's configuration and a way to run the audit on it."""

    namespace: str
    kubeconfig: Path
    config: Path
    workdir: Path

    def run(self, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`gitwarden audit` in a child process, as an operator runs it."""
        return cli.run(
            "audit",
            "--kubeconfig",
            str(kubeconfig or self.kubeconfig),
            "--config",
            str(self.config),
            *args,
        )

    def findings(self, *args: str) -> tuple[int, list[dict[str, Any]]]:
        """Exit code and the RBAC rows of `--json`."""
        done = self.run("--json", *args)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)["rbac"]


@pytest.fixture
def installation(control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path: Path) -> Audit:
    """A fresh GitWarden namespace and its admission configuration file."""
    namespace = f"gwa-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    config = tmp_path / "admission.yaml"
    config.write_text(
        yaml.safe_dump({"namespace": namespace, "gitops": {"service_account": "reconciler"}})
    )
    return Audit(namespace, control_plane.admin_kubeconfig(tmp_path / "admin.kc"), config, tmp_path)


def _rows(findings: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["subject"]["name"] == user]


def _user(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def _role_and_binding(
    admin: k8s.ApiClient, namespace: str | None, name: str, user: str, rules: list[Any]
) -> None:
    """A Role + RoleBinding in `namespace`, or a ClusterRole + ClusterRoleBinding."""
    api = k8s.RbacAuthorizationV1Api(admin)
    kind = "Role" if namespace else "ClusterRole"
    role = {"metadata": {"name": name}, "rules": rules}
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [_user(user)],
    }
    if namespace:
        api.create_namespaced_role(namespace, role)
        api.create_namespaced_role_binding(namespace, binding)
    else:
        api.create_cluster_role(role)
        api.create_cluster_role_binding(binding)


def _delete_binding(admin: k8s.ApiClient, namespace: str | None, name: str) -> None:
    api = k8s.RbacAuthorizationV1Api(admin)
    if namespace:
        api.delete_namespaced_role_binding(name, namespace)
    else:
        api.delete_cluster_role_binding(name)


# --------------------------------------------------------------------------------- tests


def test_impersonating_the_gitops_service_account_through_a_role_is_reported_until_removed(
    installation: Audit, admin: k8s.ApiClient
) -> None:
    """A Role granting `impersonate` on serviceaccounts/reconciler: reported, SAR-confirmed."""
    user = f"mallory-{uuid.uuid4().hex[:6]}"
    rules = [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "verbs": ["impersonate"],
            "resourceNames": ["reconciler"],
        }
    ]
    _role_and_binding(admin, installation.namespace, "imp", user, rules)
    code, findings = installation.findings()
    (row,) = _rows(findings, user)
    assert code == 1
    assert (row["permission"], row["status"], row["confirmed"]) == (
        "impersonate-gitops",
        "finding",
        True,
    )
    assert row["via"] == (
        f"RoleBinding {installation.namespace}/imp -> Role (same name) [names: reconciler]"
    )
    _delete_binding(admin, installation.namespace, "imp")
    _, after = installation.findings()
    assert _rows(after, user) == []


def test_impersonating_the_gitops_username_pod_extras_and_masters_via_a_cluster_role_is_reported(
    installation: Audit, admin: k8s.ApiClient
) -> None:
    """impersonate users/<gitops>, userextras/…/pod-name and groups/system:masters: each a
    finding, each confirmed by the authorizer."""
    user = f"mallory-{uuid.uuid4().hex[:6]}"
    gitops = f"system:serviceaccount:{installation.namespace}:reconciler"
    rules = [
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
         "resourceNames": [gitops]},
        {"apiGroups": ["authentication.k8s.io"],
         "resources": [f"userextras/{checks.POD_NAME_EXTRA}"], "verbs": ["impersonate"]},
        {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
         "resourceNames": ["system:masters"]},
    ]  # fmt: skip
    name = f"imp-{user}"
    _role_and_binding(admin, None, name, user, rules)
    try:
        _, findings = installation.findings()
        rows = {(r["permission"], r["confirmed"]) for r in _rows(findings, user)}
        assert rows == {
            ("impersonate-gitops", True),
            ("impersonate-pod-extras", True),
            ("impersonate-exempt", True),
        }
    finally:
        _delete_binding(admin, None, name)
    _, after = installation.findings()
    assert _rows(after, user) == []


def test_a_role_binding_granting_gitops_tokens_is_reported(
    installation: Audit, admin: k8s.ApiClient
) -> None:
    """`create serviceaccounts/token` in GitWarden's namespace mints GitOps tokens: reported."""
    user = f"minter-{uuid.uuid4().hex[:6]}"
    rules = [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]
    _role_and_binding(admin, installation.namespace, "tokens", user, rules)
    _, findings = installation.findings()
    (row,) = _rows(findings, user)
    assert (row["permission"], row["status"], row["confirmed"]) == ("gitops-token", "finding", True)
    assert row["requests"] == [
        f"create serviceaccounts/token reconciler in {installation.namespace}"
    ]


def test_ways_around_the_api_server_are_reported(installation: Audit, admin: k8s.ApiClient) -> None:
    """Kubelet access (nodes/proxy) and approving client certificates: findings, confirmed."""
    user = f"around-{uuid.uuid4().hex[:6]}"
    rules = [
        {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]},
        {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["approve"],
         "resourceNames": ["kubernetes.io/kube-apiserver-client"]},
    ]  # fmt: skip
    _role_and_binding(admin, None, f"around-{user}", user, rules)
    try:
        _, findings = installation.findings()
    finally:
        _delete_binding(admin, None, f"around-{user}")
    rows = {(r["permission"], r["status"], r["confirmed"]) for r in _rows(findings, user)}
    assert rows == {("node-proxy", "finding", True), ("client-certificates", "finding", True)}


def test_expected_identities_are_printed_as_expected_and_exit_0_needs_nothing_else(
    installation: Audit, admin: k8s.ApiClient
) -> None:
    """--expect turns a grant into `expected`; system:masters is always listed, unavoidable."""
    user = f"ops-{uuid.uuid4().hex[:6]}"
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]
    _role_and_binding(admin, installation.namespace, "pods", user, rules)
    _, findings = installation.findings(f"--expect={user}=pods")
    (row,) = _rows(findings, user)
    assert (row["permission"], row["status"]) == ("pods", "expected")
    (masters,) = _rows(findings, "system:masters")
    assert masters["status"] == "unavoidable"
    assert "bypasses RBAC" in masters["via"]
    bad = installation.run(f"--expect={user}=no-such-permission")
    assert bad.returncode == 2
    assert "unknown permission no-such-permission" in bad.stderr


EXTRAS = "authentication.k8s.io"


@pytest.mark.parametrize(
    ("rule", "request_", "allowed"),
    [
        # RBAC has `*/subresource` but no `resource/*`.
        ({"apiGroups": [""], "resources": ["pods/*"], "verbs": ["create"]},
         rbac.Request("create", "", "pods", "exec", "{ns}", "p"), False),
        ({"apiGroups": [""], "resources": ["*/exec"], "verbs": ["create"]},
         rbac.Request("create", "", "pods", "exec", "{ns}", "p"), True),
        # So `userextras/*` does not grant an extra, while `*` and `*/<extra>` do.
        ({"apiGroups": [EXTRAS], "resources": ["userextras/*"], "verbs": ["impersonate"]},
         rbac.Request("impersonate", EXTRAS, "userextras", checks.POD_NAME_EXTRA,
                      name="gitwarden-reconciler-0"), False),
        ({"apiGroups": [EXTRAS], "resources": [f"*/{checks.POD_NAME_EXTRA}"],
          "verbs": ["impersonate"]},
         rbac.Request("impersonate", EXTRAS, "userextras", checks.POD_NAME_EXTRA,
                      name="gitwarden-reconciler-0"), True),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["impersonate"]},
         rbac.Request("impersonate", EXTRAS, "userextras", checks.POD_UID_EXTRA,
                      name="0b4b6d1e"), True),
        # The Namespace object is "in" its own namespace for a RoleBinding.
        ({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["patch"]},
         rbac.Request("patch", "", "namespaces", namespace="{ns}", name="{ns}"), True),
        ({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"],
          "resourceNames": ["webhook"]},
         rbac.Request("create", "", "serviceaccounts", "token", "{ns}", "reconciler"), False),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["create"], "resourceNames": ["p"]},
         rbac.Request("create", "", "pods", namespace="{ns}"), False),
    ],
)  # fmt: skip
def test_rbac_reading_agrees_with_the_authorizer(
    installation: Audit,
    admin: k8s.ApiClient,
    rule: dict[str, Any],
    request_: rbac.Request,
    allowed: bool,
) -> None:
    """Our rule matching says what a SubjectAccessReview says, for the tricky rule shapes
    (namespaced requests through a Role, cluster-scoped ones through a ClusterRole)."""
    user = f"probe-{uuid.uuid4().hex[:6]}"
    ns = installation.namespace
    request = rbac.Request(
        request_.verb,
        request_.group,
        request_.resource,
        request_.subresource,
        request_.namespace.format(ns=ns),
        request_.name.format(ns=ns),
    )
    scope = ns if request.namespace else None
    # A sentinel grant in the same role shows when the authorizer has seen the binding (its
    # cache follows RBAC objects asynchronously), so a "denied" is the rule's, not the lag's.
    sentinel = rbac.Request("get", "", "configmaps", "", request.namespace, "audit-sentinel")
    grant = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
             "resourceNames": [sentinel.name]}  # fmt: skip
    _role_and_binding(admin, scope, f"probe-{user}", user, [rule, grant])
    try:
        cluster = kube.KubeCluster(admin)
        wait_until(
            lambda: cluster.allowed(rbac.Subject("User", user), sentinel, sentinel.name),
            "the authorizer to see the probe's binding",
        )
        snapshot = cluster.rbac_snapshot()
        ours = [h for h in rbac.holders(snapshot, [request]) if h.subject.name == user]
        theirs = cluster.allowed(rbac.Subject("User", user), request, request.name)
    finally:
        _delete_binding(admin, scope, f"probe-{user}")
    assert (bool(ours), theirs) == (allowed, allowed), (rule, request)


def test_aggregated_cluster_roles_are_resolved_by_the_audit_itself(
    installation: Audit, admin: k8s.ApiClient
) -> None:
    """A ClusterRole that aggregates a labelled `escalate` rule: reported through the aggregate.

    The real aggregation controller copies the rule into the aggregate shortly after; until it
    has, only reading the aggregation ourselves finds it. Either way the binding is reported.
    """
    user = f"agg-{uuid.uuid4().hex[:6]}"
    label = f"gitwarden.test/aggregate-{user}"
    api = k8s.RbacAuthorizationV1Api(admin)
    api.create_cluster_role(
        {
            "metadata": {"name": f"{user}-part", "labels": {label: "true"}},
            "rules": [
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                 "verbs": ["escalate"]}
            ],
        }
    )  # fmt: skip
    api.create_cluster_role(
        {
            "metadata": {"name": user},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]},
        }
    )
    api.create_cluster_role_binding(
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": user},
            "subjects": [_user(user)],
        }
    )  # fmt: skip
    try:
        _, findings = installation.findings()
        (row,) = _rows(findings, user)
        assert row["permission"] == "rbac-escalate"
        assert row["via"].startswith(f"ClusterRoleBinding {user} -> ClusterRole"), row["via"]
    finally:
        api.delete_cluster_role_binding(user)


def test_unreachable_api_server_exits_2_without_a_traceback(installation: Audit) -> None:
    """A kubeconfig pointing at a closed port: a one-line error and exit code 2."""
    dead = installation.workdir / "dead.kc"
    doc = yaml.safe_load(installation.kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead.write_text(yaml.safe_dump(doc))
    done = installation.run(kubeconfig=dead)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "cannot reach the API server" in done.stderr
    missing = installation.run(kubeconfig=installation.workdir / "nope.kc")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "cannot load cluster credentials" in missing.stderr


def test_a_user_without_rbac_read_gets_exit_2_and_the_reason(
    installation: Audit, control_plane: ControlPlane
) -> None:
    """Listing RBAC needs read access: Forbidden is an error (2), not "nobody found" (0)."""
    nobody = control_plane.kubeconfig(
        Credentials(cert=control_plane.user_credentials("nobody-at-all").cert),
        installation.workdir / "nobody.kc",
    )
    done = installation.run(kubeconfig=nobody)
    assert done.returncode == 2
    assert "HTTP 403 Forbidden" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_bootstrap_identities_of_a_fresh_cluster_are_expected(installation: Audit) -> None:
    """kube-controller-manager's controllers hold what their bootstrap roles give them: printed
    as expected, each named one by one; none is a finding (other tests' grants may be)."""
    _, findings = installation.findings()
    system = [
        f
        for f in findings
        if f["subject"].get("namespace") == "kube-system"
        or f["subject"]["name"].startswith("system:")
    ]
    assert {f["status"] for f in system} == {"expected", "unavoidable"}, system
    controllers = {f["subject"]["name"] for f in system if f["status"] == "expected"}
    assert {"replicaset-controller", "generic-garbage-collector"} <= controllers


def test_a_fresh_cluster_with_gitwarden_registered_audits_clean_with_exit_0(
    tmp_path: Path,
) -> None:
    """On its own control plane (the session's carries other tests' grants): only expected and
    unavoidable rows, the registration as configured, nothing foreign in the namespace: 0."""
    document = {"namespace": "gitwarden"}
    config = tmp_path / "admission.yaml"
    config.write_text(yaml.safe_dump(document))
    ca = tmp_path / "ca.crt"
    url = f"https://127.0.0.1:{free_port()}"
    with running_control_plane() as plane:
        k8s.CoreV1Api(plane.admin()).create_namespace(
            {"metadata": {"name": "gitwarden"}}, field_manager="gitwarden"
        )
        plane.register_validating_webhook(
            registration.validating_webhook_configuration(
                config_mod.from_document(document), {"url": url}
            )
        )
        ca.write_bytes(plane.webhook_ca.cert_pem)
        done = cli.run(
            "audit",
            "--kubeconfig", str(plane.admin_kubeconfig(tmp_path / "kc")),
            "--config", str(config),
            "--url", url,
            "--ca-bundle", str(ca),
            "--json",
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert {r["status"] for r in report["rbac"]} == {"expected", "unavoidable"}
    assert report["webhook_configuration"]["drift"] == []
    assert report["namespace_changes"] == []
