"""Pod-bound GitOps identity end to end: only tokens bound to the reconciler's pods count.

With `require_pod_bound_token`, the CEL fast path skips the GitOps service account only when
its token carries the pod-name extra of a reconciler pod, and the policy agrees; a token
minted with the TokenRequest API alone (as `kubectl create token` does) is treated like any
other user.
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
)
from tests.harness import controllers
from tests.harness.controlplane import ControlPlane
from webhook import config as config_mod

pytestmark = pytest.mark.cluster

CONFIG = config_mod.AdmissionConfig(
    namespace=GITOPS_NS,
    gitops_service_account=GITOPS_SA,
    repository_url=REPO,
    require_pod_bound_token=True,
    pod_name_prefixes=("gitwarden-reconciler-",),
)


@pytest.fixture(scope="module")
def clients(control_plane: ControlPlane) -> dict[str, k8s.ApiClient]:
    """The account's clients, minted before the webhook guards its token requests."""
    return {
        "reconciler-pod": control_plane.as_service_account(
            GITOPS_NS, GITOPS_SA, pod="gitwarden-reconciler-0"
        ),
        "minted": control_plane.as_service_account(GITOPS_NS, GITOPS_SA),
        "other-pod": control_plane.as_service_account(GITOPS_NS, GITOPS_SA, pod="debug-shell"),
    }


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    clients: dict[str, k8s.ApiClient],
) -> Iterator[Stack]:
    """The webhook stack with pod-bound tokens required."""
    with running_stack(control_plane, admin, tmp_path_factory.mktemp("podbound"), CONFIG) as s:
        yield s


def test_token_bound_to_a_reconciler_pod_is_the_gitops_identity(
    stack: Stack, clients: dict[str, k8s.ApiClient], namespace: str
) -> None:
    """A token bound to gitwarden-reconciler-0 may create, update and delete managed objects."""
    core = k8s.CoreV1Api(clients["reconciler-pod"])
    core.create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v2"}})
    assert core.read_namespaced_config_map("cm", namespace).data == {"k": "v2"}
    core.delete_namespaced_config_map("cm", namespace)
    assert controllers.own_names(core.list_namespaced_config_map(namespace).items) == []


def test_minted_token_of_the_same_account_is_denied(
    stack: Stack, clients: dict[str, k8s.ApiClient], namespace: str
) -> None:
    """A TokenRequest token without a pod binding is not the GitOps identity."""
    minted = k8s.CoreV1Api(clients["minted"])
    message = denied_message(
        lambda: minted.create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    )
    assert f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA} may not create it" in message


def test_token_bound_to_another_pod_is_denied(
    stack: Stack, clients: dict[str, k8s.ApiClient], namespace: str
) -> None:
    """A token bound to some other pod running as the account is not the GitOps identity."""
    other = k8s.CoreV1Api(clients["other-pod"])
    denied_message(lambda: other.create_namespaced_config_map(namespace, configmap("cm", MANAGED)))


def test_impersonating_the_gitops_account_is_denied(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """An admin impersonating the service account carries no pod binding: denied."""
    impersonating = k8s.ApiClient(admin.configuration)
    impersonating.set_default_header(  # type: ignore[no-untyped-call]  # untyped in the client
        "Impersonate-User", f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA}"
    )
    core = k8s.CoreV1Api(impersonating)
    # Impersonation itself works.
    assert controllers.own_names(core.list_namespaced_config_map(namespace).items) == []
    message = denied_message(
        lambda: core.create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    )
    assert f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA} may not create it" in message
