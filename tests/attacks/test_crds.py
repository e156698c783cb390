"""Attack: delete managed custom resources by deleting their (unlabelled) CRD.

Before: a CRD installed outside Git carries no managed label, so deleting it never reached the
webhook, and the API server deleted every custom resource of it, managed ones included. Now,
for CRDs of the configured `guarded_crd_groups`, the webhook lists the CRD's custom resources
(labelSelector managed, limit 1) and refuses the delete while one exists. (CRDs that GitOps
applies carry the managed label and are guarded as managed objects.)
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import MANAGED, Stack, denied_message

pytestmark = pytest.mark.cluster


def test_alice_cannot_delete_a_crd_while_it_has_managed_instances(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """Denied while a managed Gizmo exists; allowed once Git has removed it."""
    group = kit.WIDGETS[0]
    plural = f"gizmo{kit.unique('x')[2:]}s"
    kit.install_crd(admin, group, plural, "Gizmo")
    gizmos = k8s.CustomObjectsApi(stack.gitops)
    body = {
        "apiVersion": f"{group}/v1",
        "kind": "Gizmo",
        "metadata": {"name": "g", "labels": MANAGED},
        "spec": {"replicas": 1},
    }
    gizmos.create_namespaced_custom_object(group, "v1", namespace, plural, body)
    crds = k8s.ApiextensionsV1Api(stack.alice)
    message = denied_message(
        lambda: crds.delete_custom_resource_definition(f"{plural}.{group}"),
        "crd-deletes.gitwarden.gitwarden.dev",
    )
    assert "defines custom resources managed by GitOps: alice may not delete it" in message
    assert gizmos.get_namespaced_custom_object(group, "v1", namespace, plural, "g")
    gizmos.delete_namespaced_custom_object(group, "v1", namespace, plural, "g")
    crds.delete_custom_resource_definition(f"{plural}.{group}")
