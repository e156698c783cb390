"""Attack: become the pod-bound GitOps identity without being the reconciler.

Before: anyone allowed `create serviceaccounts/token` on the reconciler's account minted a
token bound to the real reconciler pod (GitWarden's namespace never reached the webhook), and
anyone allowed to create pods there ran one as that account, or named like the reconciler's.
Now token requests for the GitOps account are the kubelets' alone, and pods that would hold
its tokens are created only by GitOps or their ReplicaSet/StatefulSet controllers.

What admission cannot stop: impersonation. An AdmissionReview carries no marker of it, so a
user allowed to impersonate the account *and* its `authentication.kubernetes.io/*` extras is
the GitOps identity. The last test shows it getting through; the README names the RBAC to deny.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import GITOPS_NS, GITOPS_SA, MANAGED, Stack, configmap, denied_message
from tests.harness import controllers
from tests.harness.controlplane import Credentials

pytestmark = pytest.mark.cluster

HOOK = "gitops-namespace.gitwarden.gitwarden.dev"
RECONCILER_POD = "gitwarden-reconciler-0"  # made by the stack before the guard was registered


def _token_request(pod_uid: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"audiences": [], "expirationSeconds": 600}
    if pod_uid is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": RECONCILER_POD,
            "uid": pod_uid,
        }
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


def _reconciler_uid(stack: Stack) -> str:
    return str(
        k8s.CoreV1Api(stack.gitops).read_namespaced_pod(RECONCILER_POD, GITOPS_NS).metadata.uid
    )


def test_alice_cannot_mint_a_token_bound_to_the_reconciler_pod(stack: Stack) -> None:
    """Not a plain token, not one bound to the real reconciler pod."""
    alice = k8s.CoreV1Api(stack.alice)
    for body in (_token_request(), _token_request(_reconciler_uid(stack))):

        def mint(body: dict[str, Any] = body) -> object:
            return alice.create_namespaced_service_account_token(GITOPS_SA, GITOPS_NS, body)

        message = denied_message(mint, HOOK)
        assert "is the GitOps identity's service account: alice may not create" in message


def test_the_kubelet_still_mints_the_reconcilers_token(stack: Stack) -> None:
    """A node's kubelet asks for its pods' tokens: skipped in the API server, so never blocked."""
    kubelet = k8s.CoreV1Api(stack.plane.as_user("system:node:n1", ("system:nodes",)))
    token = kubelet.create_namespaced_service_account_token(
        GITOPS_SA, GITOPS_NS, _token_request(_reconciler_uid(stack))
    )
    assert token.status.token


@pytest.mark.parametrize(
    ("name", "account"),
    [("runs-as-gitops", GITOPS_SA), ("gitwarden-reconciler-evil", "default")],
)
def test_alice_cannot_run_a_pod_that_would_hold_gitops_tokens(
    stack: Stack, name: str, account: str
) -> None:
    """A pod running as the GitOps account, or named like the reconciler's, is refused."""
    manifest = kit.pod(kit.unique(name) if account == GITOPS_SA else name, labels={})
    manifest["spec"]["serviceAccountName"] = account
    alice = k8s.CoreV1Api(stack.alice)
    message = denied_message(lambda: alice.create_namespaced_pod(GITOPS_NS, manifest), HOOK)
    assert "would run as the GitOps identity" in message


def test_other_pods_in_gitwardens_namespace_are_not_held_up(stack: Stack) -> None:
    """Pods that cannot hold GitOps tokens never reach the webhook (the webhook's own, say)."""
    name = kit.unique("webhook")
    alice = k8s.CoreV1Api(stack.alice)
    alice.create_namespaced_pod(GITOPS_NS, kit.pod(name, labels={}))
    alice.delete_namespaced_pod(name, GITOPS_NS, grace_period_seconds=0)


def _impersonating(admin: k8s.ApiClient, pod: str, uid: str) -> k8s.CoreV1Api:
    client = k8s.ApiClient(admin.configuration)
    headers = {
        "Impersonate-User": f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA}",
        "Impersonate-Extra-authentication.kubernetes.io%2Fpod-name": pod,
        "Impersonate-Extra-authentication.kubernetes.io%2Fpod-uid": uid,
    }
    for key, value in headers.items():
        client.set_default_header(key, value)  # type: ignore[no-untyped-call]  # untyped
    return k8s.CoreV1Api(client)


def test_impersonation_with_the_real_pods_extras_gets_through(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """THE LIMIT: admission sees exactly what a real pod-bound token shows, so this passes.

    Deny `impersonate` on the GitOps service account and on
    `userextras/authentication.kubernetes.io/*` to everyone (see the README's trust model).
    """
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    forged = _impersonating(admin, RECONCILER_POD, _reconciler_uid(stack))
    forged.patch_namespaced_config_map("cm", namespace, {"data": {"k": "impersonated"}})
    forged.delete_namespaced_config_map("cm", namespace)
    left = k8s.CoreV1Api(stack.gitops).list_namespaced_config_map(namespace).items
    assert controllers.own_names(left) == []


def test_a_long_lived_token_secret_of_the_gitops_account_is_not_the_gitops_identity(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """A legacy token Secret (filled by the real token controller) carries no pod binding.

    Creating the Secret is not refused (RBAC decides who writes Secrets in GitWarden's
    namespace); the token it yields is: with pod-bound tokens required it is not GitOps.
    """
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    name = kit.unique("gitops-token")
    alice = k8s.CoreV1Api(stack.alice)
    body = {
        "metadata": {
            "name": name,
            "annotations": {"kubernetes.io/service-account.name": GITOPS_SA},
        },
        "type": "kubernetes.io/service-account-token",
    }
    alice.create_namespaced_secret(GITOPS_NS, body)
    try:
        token = ""
        for _ in range(200):  # the tokens controller fills it within a second or two
            token = str((alice.read_namespaced_secret(name, GITOPS_NS).data or {}).get("token", ""))
            if token:
                break
            time.sleep(0.05)
        assert token, "the token controller never filled the Secret"
        creds = Credentials(token=base64.b64decode(token).decode())
        stolen = k8s.CoreV1Api(stack.plane.client_for(creds))
        assert stolen.list_namespaced_config_map(namespace).items  # the token does authenticate
        message = denied_message(
            lambda: stolen.patch_namespaced_config_map("cm", namespace, {"data": {"k": "stolen"}})
        )
        assert f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA} may not" in message, message
        message = denied_message(lambda: stolen.delete_namespaced_config_map("cm", namespace))
        live = k8s.CoreV1Api(stack.gitops).read_namespaced_config_map("cm", namespace)
        assert live.data == configmap("cm", MANAGED)["data"]
    finally:
        alice.delete_namespaced_secret(name, GITOPS_NS)
