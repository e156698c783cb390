"""Attack: change a managed object's metadata through its `status` subresource.

Before: */status never reached the webhook by default, so alice removed the managed label
from a Service through services/status (and could then edit and delete it), and a controller
identity could add a ghost owner, a finalizer or a phishing source path through
deployments/status. Now every status write of a managed object is checked and may change only
status (plus the deployment controller's revision annotations).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import MANAGED, Stack, create_managed, denied_message

pytestmark = pytest.mark.cluster

CLUSTER_HOOK = "cluster-kinds.gitwarden.gitwarden.dev"


def _service(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": MANAGED},
        "spec": {"ports": [{"port": 80}], "clusterIP": "None"},
    }


def test_alice_cannot_remove_the_managed_label_through_service_status(
    stack: Stack, namespace: str
) -> None:
    """PATCH services/status with a label removal is denied; the label stays."""
    k8s.CoreV1Api(stack.gitops).create_namespaced_service(namespace, _service("svc"))
    alice = k8s.CoreV1Api(stack.alice)
    message = denied_message(
        lambda: alice.patch_namespaced_service_status(
            "svc", namespace, {"metadata": {"labels": {"gitwarden.dev/managed": None}}}
        )
    )
    assert "alice may not update the status of it" in message
    stored = k8s.CoreV1Api(stack.gitops).read_namespaced_service("svc", namespace)
    assert stored.metadata.labels == MANAGED


def test_alice_cannot_remove_the_managed_label_through_pod_status(
    stack: Stack, namespace: str
) -> None:
    """The same through pods/status."""
    k8s.CoreV1Api(stack.gitops).create_namespaced_pod(namespace, kit.pod("p"))
    alice = k8s.CoreV1Api(stack.alice)
    denied_message(
        lambda: alice.patch_namespaced_pod_status(
            "p", namespace, {"metadata": {"labels": {"gitwarden.dev/managed": None}}}
        )
    )
    assert k8s.CoreV1Api(stack.gitops).read_namespaced_pod("p", namespace).metadata.labels == (
        MANAGED
    )


GHOST = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "0a0a0a0a-ghost"}
METADATA_ATTACKS: dict[str, dict[str, Any]] = {
    "ghost-owner": {"ownerReferences": [GHOST]},
    "finalizer": {"finalizers": ["attack.example/block"]},
    "phishing-source-path": {
        "annotations": {"gitwarden.dev/source-path": "phish: see https://evil.example/fix"}
    },
}
# (deployments/status resets labels itself; services/status and pods/status do not, above.)


@pytest.mark.parametrize("attack", sorted(METADATA_ATTACKS))
def test_even_the_deployment_controller_cannot_change_metadata_through_status(
    stack: Stack, namespace: str, attack: str
) -> None:
    """A controller's status write may carry status only: owners, finalizers, paths are denied."""
    create_managed(stack, namespace)
    deployments = k8s.AppsV1Api(kit.controller(stack, "deployment-controller"))
    patch = {"metadata": METADATA_ATTACKS[attack], "status": {"observedGeneration": 1}}
    denied_message(lambda: deployments.patch_namespaced_deployment_status("web", namespace, patch))
    stored = k8s.AppsV1Api(stack.gitops).read_namespaced_deployment("web", namespace).metadata
    assert stored.owner_references is None
    assert stored.finalizers is None
    assert stored.labels == MANAGED
    assert "gitwarden.dev/source-path" not in (stored.annotations or {})


def test_any_other_service_account_cannot_write_status(stack: Stack, namespace: str) -> None:
    """The old allowance matched the group system:serviceaccounts: a CI account passed."""
    create_managed(stack, namespace)
    ci = k8s.AppsV1Api(stack.plane.as_service_account("team-ci", "ci"))
    denied_message(
        lambda: ci.patch_namespaced_deployment_status(
            "web", namespace, {"status": {"observedGeneration": 7}}
        )
    )


def test_controller_status_writes_and_revision_annotation_are_allowed(
    stack: Stack, namespace: str
) -> None:
    """What the deployment controller really does still works: status, its revision annotation."""
    create_managed(stack, namespace)
    deployments = k8s.AppsV1Api(kit.controller(stack, "deployment-controller"))
    # What was written is read from the answers: the real deployment controller runs too and
    # writes its own status and revision over them right after.
    written = deployments.patch_namespaced_deployment_status(
        "web", namespace, {"status": {"observedGeneration": 1, "replicas": 7}}
    )
    assert written.status.replicas == 7
    annotated = deployments.patch_namespaced_deployment_status(
        "web",
        namespace,
        {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}},
    )
    assert annotated.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    denied_message(
        lambda: deployments.patch_namespaced_deployment_status(
            "web", namespace, {"metadata": {"annotations": {"example.com/other": "x"}}}
        )
    )


def test_alice_cannot_change_metadata_of_a_guarded_cluster_kind_through_status(
    stack: Stack,
) -> None:
    """A guarded cluster-scoped kind (no managed label) is checked through `*/status` too.

    Before: the cluster-kinds webhook listed the bare resources only, so `persistentvolumes/
    status` added a ghost ownerReference (the garbage collector then deletes the object) and
    rewrote the source-path annotation without the webhook.
    """
    name = kit.unique("pv")
    core = k8s.CoreV1Api(stack.gitops)
    core.create_persistent_volume(
        {
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/gitwarden-attack"},
            },
        }
    )
    alice = k8s.CoreV1Api(stack.alice)
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "ghost",
        "uid": "6a1f4c52-0d0e-4c47-9b8e-00000000dead",
    }
    patches: list[dict[str, Any]] = [
        {"metadata": {"ownerReferences": [ghost]}},
        {"metadata": {"annotations": {"gitwarden.dev/source-path": "phish: see evil"}}},
    ]
    for patch in patches:

        def write(patch: dict[str, Any] = patch) -> object:
            return alice.patch_persistent_volume_status(name, patch)

        message = denied_message(write, CLUSTER_HOOK)
        assert f"persistentvolumes {name} is a GitOps-guarded cluster-scoped kind" in message
    stored = core.read_persistent_volume(name).metadata
    assert not stored.owner_references
    assert "gitwarden.dev/source-path" not in (stored.annotations or {})
