"""Pod-bound GitOps identity with the live-pod check (`verify_pod_live`), end to end.

Impersonation can claim any pod-name and pod-uid extras. With `verify_pod_live` the webhook
reads the named pod in GitWarden's namespace and accepts the GitOps identity only when that pod
is alive with the token's uid, so made-up extras (a prefix-named pod that does not exist, the
real pod's name with another uid) are denied. Extras copied from the live pod still pass: that
is the limit admission has (tests/attacks/test_gitops_identity.py shows it too).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.e2e.webhook_stack import (
    GITOPS_NS,
    GITOPS_SA,
    MANAGED,
    REPO,
    Stack,
    configmap,
    denied_message,
    running_stack,
    wait_until,
)
from tests.harness.controlplane import ControlPlane
from webhook import config as config_mod

pytestmark = pytest.mark.cluster

CONFIG = config_mod.AdmissionConfig(
    namespace=GITOPS_NS,
    gitops_service_account=GITOPS_SA,
    repository_url=REPO,
    require_pod_bound_token=True,
    pod_name_prefixes=("gitwarden-reconciler-",),
    verify_pod_live=True,
)
POD = "gitwarden-reconciler-0"


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The webhook stack with live pod binding checked."""
    with running_stack(control_plane, admin, tmp_path_factory.mktemp("podlive"), CONFIG) as s:
        yield s


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


def _uid(admin: k8s.ApiClient) -> str:
    return str(k8s.CoreV1Api(admin).read_namespaced_pod(POD, GITOPS_NS).metadata.uid)


def test_the_reconcilers_own_token_is_checked_and_accepted(stack: Stack, namespace: str) -> None:
    """The real pod-bound token now goes through the webhook, which finds its pod alive."""
    core = k8s.CoreV1Api(stack.gitops)
    core.create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    core.delete_namespaced_config_map("cm", namespace)
    line = f"by system:serviceaccount:{GITOPS_NS}:{GITOPS_SA}: allowed (gitops-identity"
    # Log lines are written in batches (webhook/logbuffer.py): this one within moments.
    wait_until(lambda: line in stack.webhook.log(), "the GitOps decision in the log", 5)


@pytest.mark.parametrize("forgery", ["no-such-pod", "wrong-uid"])
def test_impersonation_with_made_up_extras_is_denied(
    stack: Stack, admin: k8s.ApiClient, namespace: str, forgery: str
) -> None:
    """A prefix-named pod that does not exist, or the real name with another uid: denied."""
    pod, uid = (
        ("gitwarden-reconciler-zz", "3f0e0000-0000-0000-0000-000000000000")
        if forgery == "no-such-pod"
        else (POD, "3f0e0000-0000-0000-0000-000000000001")
    )
    forged = _impersonating(admin, pod, uid)
    denied_message(lambda: forged.create_namespaced_config_map(namespace, configmap("x", MANAGED)))


def test_impersonation_with_the_live_pods_extras_still_passes(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """The limit: nothing in the review tells it from the real token. Deny it by RBAC."""
    forged = _impersonating(admin, POD, _uid(admin))
    forged.create_namespaced_config_map(namespace, configmap("x", MANAGED))
    assert k8s.CoreV1Api(admin).read_namespaced_config_map("x", namespace).metadata.labels == (
        MANAGED
    )
