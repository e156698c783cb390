"""Attack: get at managed objects through their namespace.

Before: alice removed the protected label from an (unmanaged) protected namespace and then
created objects in it, and deleting an unmanaged namespace that held managed objects was
allowed (the namespace controller then deletes them). Now a protected namespace's label is
GitOps's to change, and a namespace that is protected or holds managed objects cannot be
deleted by anyone else.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import MANAGED, Stack, configmap, denied_message

pytestmark = pytest.mark.cluster

OBJECTS_HOOK = "protected-namespace-objects.gitwarden.gitwarden.dev"
DELETES_HOOK = "namespace-deletes.gitwarden.gitwarden.dev"


def test_alice_cannot_remove_or_change_the_protected_label(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """Removing or changing the label is denied; other labels stay hers to edit."""
    ns = kit.protected_namespace(admin)
    alice = k8s.CoreV1Api(stack.alice)
    message = denied_message(
        lambda: alice.patch_namespace(
            ns, {"metadata": {"labels": {"gitwarden.dev/protected": None}}}
        ),
        OBJECTS_HOOK,
    )
    assert f"Namespace {ns} is a protected namespace: alice may not update it" in message
    denied_message(
        lambda: alice.patch_namespace(
            ns, {"metadata": {"labels": {"gitwarden.dev/protected": "no"}}}
        ),
        OBJECTS_HOOK,
    )
    alice.patch_namespace(ns, {"metadata": {"labels": {"team": "a"}}})
    labels = k8s.CoreV1Api(admin).read_namespace(ns).metadata.labels
    assert labels["gitwarden.dev/protected"] == "true"
    assert labels["team"] == "a"
    # And creates there still need GitOps.
    denied_message(
        lambda: alice.create_namespaced_config_map(ns, configmap("x")),
        "protected-namespaces.gitwarden.gitwarden.dev",
    )


@pytest.mark.parametrize("subresource", ["status", "finalize"])
def test_alice_cannot_remove_the_protected_label_through_a_subresource(
    stack: Stack, admin: k8s.ApiClient, subresource: str
) -> None:
    """`namespaces/status` and `namespaces/finalize` store the labels they are sent, too.

    Before: only `namespaces` itself was sent to the webhook (and the policy looked at no
    subresource), so a status or finalize write without the label unprotected the namespace.
    """
    ns = kit.protected_namespace(admin)
    alice = k8s.CoreV1Api(stack.alice)
    body = k8s.CoreV1Api(admin).read_namespace(ns)
    body.metadata.labels = {k: v for k, v in body.metadata.labels.items() if k not in kit.PROTECTED}
    write = (
        alice.replace_namespace_status
        if subresource == "status"
        else alice.replace_namespace_finalize
    )
    message = denied_message(lambda: write(ns, body), OBJECTS_HOOK)
    assert (
        f"namespaces {ns} is a protected namespace: alice may not update the {subresource} of it"
        in message
    )
    labels = k8s.CoreV1Api(admin).read_namespace(ns).metadata.labels
    assert labels["gitwarden.dev/protected"] == "true"


def test_alice_cannot_delete_a_protected_namespace(stack: Stack, admin: k8s.ApiClient) -> None:
    """Deleting the namespace would delete everything GitOps put there (both hooks deny it)."""
    ns = kit.protected_namespace(admin)
    delete = lambda: k8s.CoreV1Api(stack.alice).delete_namespace(ns)  # noqa: E731
    message = denied_message(delete, (OBJECTS_HOOK, DELETES_HOOK))
    assert f"Namespace {ns} is a protected namespace: alice may not delete it" in message
    assert k8s.CoreV1Api(admin).read_namespace(ns).metadata.deletion_timestamp is None


def test_alice_cannot_delete_a_namespace_holding_managed_objects(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """An unlabelled namespace with one managed Service inside is guarded like the Service."""
    ns = kit.unique("holds")
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    service = {
        "metadata": {"name": "svc", "labels": MANAGED},
        "spec": {"ports": [{"port": 80}], "clusterIP": "None"},
    }
    k8s.CoreV1Api(stack.gitops).create_namespaced_service(ns, service)
    message = denied_message(lambda: k8s.CoreV1Api(stack.alice).delete_namespace(ns), DELETES_HOOK)
    assert f"Namespace {ns} holds objects managed by GitOps: alice may not delete it" in message
    assert k8s.CoreV1Api(admin).read_namespace(ns).metadata.deletion_timestamp is None


def test_namespaces_without_managed_objects_can_be_deleted(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """Unmanaged objects only: the delete goes through (the namespace starts terminating)."""
    ns = kit.unique("free")
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    k8s.CoreV1Api(stack.alice).create_namespaced_config_map(ns, configmap("mine"))
    k8s.CoreV1Api(stack.alice).delete_namespace(ns)
    assert k8s.CoreV1Api(admin).read_namespace(ns).metadata.deletion_timestamp is not None
