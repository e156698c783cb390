"""Attack: act on a managed pod, service account or custom resource through a subresource.

Before: the rules said `resources: ["*"]` (no subresources) and no CONNECT, so alice stored an
attacker's ephemeral container in a managed pod, evicted (deleted) it, bound it to a node of
her choice, exec'd into it, minted tokens of a managed service account and scaled a managed
custom resource. Now these are decided on the parent's labels; unmanaged parents stay free.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import MANAGED, Stack, denied_message

pytestmark = pytest.mark.cluster

PARENT_HOOK = "parent.gitwarden.gitwarden.dev"


def _managed_pod(stack: Stack, namespace: str, name: str = "p") -> None:
    k8s.CoreV1Api(stack.gitops).create_namespaced_pod(namespace, kit.pod(name))


def _eviction(name: str) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}


def _binding(name: str) -> k8s.V1Binding:
    return k8s.V1Binding(
        api_version="v1",
        kind="Binding",
        metadata=k8s.V1ObjectMeta(name=name),
        target=k8s.V1ObjectReference(api_version="v1", kind="Node", name="attacker-node"),
    )


def test_alice_cannot_add_an_ephemeral_container(stack: Stack, namespace: str) -> None:
    """pods/ephemeralcontainers carries the pod: the managed webhook sees its labels."""
    _managed_pod(stack, namespace)
    alice = k8s.CoreV1Api(stack.alice)
    patch = {
        "spec": {"ephemeralContainers": [{"name": "dbg", "image": "attacker.invalid/shell:1"}]}
    }
    message = denied_message(
        lambda: alice.patch_namespaced_pod_ephemeralcontainers("p", namespace, patch)
    )
    assert "may not update the ephemeralcontainers of it" in message
    stored = k8s.CoreV1Api(stack.gitops).read_namespaced_pod("p", namespace)
    assert not stored.spec.ephemeral_containers


def test_alice_cannot_resize_a_managed_pod(stack: Stack, namespace: str) -> None:
    """pods/resize (in-place resources) carries the pod too."""
    manifest = kit.pod("p")
    manifest["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "100m"},
        "limits": {"cpu": "100m"},
    }
    k8s.CoreV1Api(stack.gitops).create_namespaced_pod(namespace, manifest)
    alice = k8s.CoreV1Api(stack.alice)
    patch = {
        "spec": {
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "4"}}}
            ]
        }
    }
    message = denied_message(lambda: alice.patch_namespaced_pod_resize("p", namespace, patch))
    assert "may not update the resize of it" in message


def test_alice_cannot_evict_a_managed_pod(stack: Stack, namespace: str) -> None:
    """An Eviction carries no labels: decided on the pod's; the pod is still there."""
    _managed_pod(stack, namespace)
    alice = k8s.CoreV1Api(stack.alice)
    message = denied_message(
        lambda: alice.create_namespaced_pod_eviction("p", namespace, _eviction("p")),
        hook=PARENT_HOOK,
    )
    assert f"pods {namespace}/p is managed by GitOps: alice may not create the eviction" in message
    assert k8s.CoreV1Api(stack.gitops).read_namespaced_pod("p", namespace).metadata.name == "p"


def test_unmanaged_pods_can_still_be_evicted(stack: Stack, namespace: str) -> None:
    """The parent lookup never fails closed on objects GitWarden does not manage."""
    core = k8s.CoreV1Api(stack.alice)
    core.create_namespaced_pod(namespace, kit.pod("free", labels={}))
    core.create_namespaced_pod_eviction("free", namespace, _eviction("free"))
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == []


def test_alice_cannot_bind_a_managed_pod_but_the_scheduler_can(
    stack: Stack, namespace: str
) -> None:
    """pods/binding of a managed pod is the scheduler's alone."""
    _managed_pod(stack, namespace)
    _managed_pod(stack, namespace, "q")
    alice = k8s.CoreV1Api(stack.alice)
    denied_message(
        lambda: alice.create_namespaced_pod_binding("p", namespace, _binding("p")),
        hook=PARENT_HOOK,
    )
    scheduler = k8s.CoreV1Api(stack.plane.as_user("system:kube-scheduler"))
    # The answer is a Status, which the client's Binding model cannot read: take it raw.
    scheduler.create_namespaced_pod_binding("q", namespace, _binding("q"), _preload_content=False)
    gitops = k8s.CoreV1Api(stack.gitops)
    assert gitops.read_namespaced_pod("q", namespace).spec.node_name == "attacker-node"
    assert gitops.read_namespaced_pod("p", namespace).spec.node_name is None


@pytest.mark.parametrize("verb", ["exec", "attach"])
def test_alice_cannot_connect_to_a_managed_pod(stack: Stack, namespace: str, verb: str) -> None:
    """CONNECT pods/exec and attach are checked before the API server connects to the node."""
    _managed_pod(stack, namespace)
    args = {"exec": ["exec", "p", "--", "true"], "attach": ["attach", "p"]}[verb]
    result = stack.kubectl(stack.alice_creds, "-n", namespace, *args)
    assert result.returncode != 0
    assert f'admission webhook "{PARENT_HOOK}" denied the request' in result.stderr, result.stderr
    assert "is managed by GitOps: alice may not connect" in result.stderr


def test_alice_cannot_port_forward_to_a_managed_pod(stack: Stack, namespace: str) -> None:
    """CONNECT pods/portforward (sent straight: kubectl itself gives up on a pending pod)."""
    _managed_pod(stack, namespace)
    alice = k8s.CoreV1Api(stack.alice)
    message = denied_message(
        lambda: alice.connect_post_namespaced_pod_portforward("p", namespace, ports="80"),
        hook=PARENT_HOOK,
    )
    assert "alice may not connect the portforward of it" in message


def test_alice_cannot_mint_tokens_of_a_managed_service_account(
    stack: Stack, namespace: str
) -> None:
    """serviceaccounts/token is decided on the service account's labels."""
    k8s.CoreV1Api(stack.gitops).create_namespaced_service_account(
        namespace, {"metadata": {"name": "deployer", "labels": MANAGED}}
    )
    alice = k8s.CoreV1Api(stack.alice)
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    message = denied_message(
        lambda: alice.create_namespaced_service_account_token("deployer", namespace, body),
        hook=PARENT_HOOK,
    )
    assert "may not create the token of it" in message


def test_alice_cannot_scale_a_managed_custom_resource(stack: Stack, namespace: str) -> None:
    """*/scale of a configured custom resource is decided on the custom resource's labels."""
    group, plural = kit.WIDGETS
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": MANAGED},
        "spec": {"replicas": 1},
    }
    k8s.CustomObjectsApi(stack.gitops).create_namespaced_custom_object(
        group, "v1", namespace, plural, widget
    )
    alice = k8s.CustomObjectsApi(stack.alice)
    denied_message(
        lambda: alice.patch_namespaced_custom_object_scale(
            group, "v1", namespace, plural, "w", {"spec": {"replicas": 9}}
        ),
        hook=PARENT_HOOK,
    )
    stored = k8s.CustomObjectsApi(stack.gitops).get_namespaced_custom_object(
        group, "v1", namespace, plural, "w"
    )
    assert stored["spec"]["replicas"] == 1
