"""What admission cannot stop, shown and then found: impersonating the GitOps identity with the
extras of a real reconciler pod gets through even with pod-bound tokens required, and
`gitwarden audit` names the user who holds the permissions that made it possible.

This test passes because Kubernetes works this way (the AdmissionReview carries the
impersonated user only); the README's trust model says so and names the RBAC to deny.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from reconciler.guard import checks
from tests.e2e.webhook_stack import (
    GITOPS_NS,
    GITOPS_SA,
    MANAGED,
    REPO,
    Stack,
    configmap,
    running_stack,
)
from tests.harness import cli, controllers
from tests.harness.controlplane import ControlPlane
from webhook import config as config_mod

pytestmark = pytest.mark.cluster

DOCUMENT = {
    "namespace": GITOPS_NS,
    "gitops": {
        "service_account": GITOPS_SA,
        "require_pod_bound_token": True,
        "pod_name_prefixes": ["gitwarden-reconciler-"],
    },
    "repository": {"url": REPO},
}
POD = "gitwarden-reconciler-0"


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The webhook stack with pod-bound GitOps tokens required."""
    config = config_mod.from_document(DOCUMENT)
    with running_stack(control_plane, admin, tmp_path_factory.mktemp("impersonate"), config) as s:
        yield s


def _grant_impersonation(admin: k8s.ApiClient, user: str) -> None:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    subject = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    rbac.create_namespaced_role(
        GITOPS_NS,
        {
            "metadata": {"name": user},
            "rules": [
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"],
                 "resourceNames": [GITOPS_SA]}
            ],
        },
    )  # fmt: skip
    rbac.create_namespaced_role_binding(
        GITOPS_NS,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": subject,
        },
    )
    rbac.create_cluster_role(
        {
            "metadata": {"name": user},
            "rules": [
                {"apiGroups": ["authentication.k8s.io"],
                 "resources": [f"userextras/{checks.POD_NAME_EXTRA}",
                               f"userextras/{checks.POD_UID_EXTRA}"],
                 "verbs": ["impersonate"]}
            ],
        }
    )  # fmt: skip
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": user},
            "subjects": subject,
        }
    )  # fmt: skip


def test_impersonation_with_a_real_pods_extras_passes_admission_and_the_audit_names_the_user(
    stack: Stack, control_plane: ControlPlane, admin: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """mallory deletes a managed ConfigMap as the reconciler pod; the audit reports her."""
    # The stack minted this pod-bound token (for POD) before the webhook began guarding both.
    reconciler = k8s.CoreV1Api(stack.gitops)
    reconciler.create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    uid = k8s.CoreV1Api(admin).read_namespaced_pod(POD, GITOPS_NS).metadata.uid
    user = f"mallory-{uuid.uuid4().hex[:6]}"
    _grant_impersonation(admin, user)

    client = control_plane.as_user(user)
    for header, value in (
        ("Impersonate-User", f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA}"),
        ("Impersonate-Extra-authentication.kubernetes.io%2Fpod-name", POD),
        ("Impersonate-Extra-authentication.kubernetes.io%2Fpod-uid", uid),
    ):
        client.set_default_header(header, value)  # type: ignore[no-untyped-call]  # untyped
    k8s.CoreV1Api(client).delete_namespaced_config_map("cm", namespace)  # admission let it pass
    assert controllers.own_names(reconciler.list_namespaced_config_map(namespace).items) == []
    # Only the audit log knows who it was.
    deletes = [
        e
        for e in control_plane.audit_events()
        if e.get("verb") == "delete"
        and e.get("objectRef", {}).get("namespace") == namespace
        and e.get("stage") == "ResponseComplete"
    ]
    assert [e["user"]["username"] for e in deletes] == [user]
    assert deletes[0]["impersonatedUser"]["extra"][checks.POD_NAME_EXTRA] == [POD]

    config = tmp_path / "admission.yaml"
    config.write_text(yaml.safe_dump(DOCUMENT))
    done = cli.run(
        "audit",
        "--kubeconfig", str(control_plane.admin_kubeconfig(tmp_path / "admin.kc")),
        "--config", str(config),
        "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    rows = [r for r in json.loads(done.stdout)["rbac"] if r["subject"]["name"] == user]
    assert {(r["permission"], r["status"], r["confirmed"]) for r in rows} == {
        ("impersonate-gitops", "finding", True),
        ("impersonate-pod-extras", "finding", True),
    }
