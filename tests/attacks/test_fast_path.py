"""Attack on availability: with the webhook down, the cluster's own work must go on.

Before: only the GitOps identity, exemptions and Leases/Events (of any group) were skipped in
the API server, so a webhook outage (or a client stalling it) failed the HPA's scale, the
controllers' status writes and the scheduler's bindings. Now everything the policy allows from
the request alone is decided by CEL matchConditions, while a person's change to a managed
object still fails closed. And the lease/event skip names the API groups, so a custom resource
whose plural is `events` is no longer a way around the webhook.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import HOOK, MANAGED, Stack, create_managed, denied_message

pytestmark = pytest.mark.cluster


def _lease(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": MANAGED}, "spec": {"holderIdentity": "x"}}


def _event(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": MANAGED},
        "involvedObject": {"kind": "ConfigMap", "name": "cm", "namespace": namespace},
        "reason": "Test",
        "message": "m",
    }


def test_identity_decided_requests_never_wait_on_the_webhook(stack: Stack, namespace: str) -> None:
    """GitOps, the HPA, a controller's status write, the scheduler, Leases and Events all pass."""
    create_managed(stack, namespace)
    gitops = k8s.CoreV1Api(stack.gitops)
    gitops.create_namespaced_pod(namespace, kit.pod("p"))
    stack.webhook.stop()
    try:
        gitops.patch_namespaced_config_map("cm", namespace, {"data": {"k": "from-git"}})
        hpa = k8s.AppsV1Api(kit.controller(stack, "horizontal-pod-autoscaler"))
        hpa.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
        dc = k8s.AppsV1Api(kit.controller(stack, "deployment-controller"))
        dc.patch_namespaced_deployment_status("web", namespace, {"status": {"replicas": 3}})
        scheduler = k8s.CoreV1Api(stack.plane.as_user("system:kube-scheduler"))
        binding = k8s.V1Binding(
            metadata=k8s.V1ObjectMeta(name="p"),
            target=k8s.V1ObjectReference(api_version="v1", kind="Node", name="n1"),
        )
        scheduler.create_namespaced_pod_binding("p", namespace, binding, _preload_content=False)
        k8s.CoordinationV1Api(stack.alice).create_namespaced_lease(namespace, _lease("l"))
        k8s.CoreV1Api(stack.alice).create_namespaced_event(namespace, _event("e1", namespace))
        k8s.EventsV1Api(stack.alice).create_namespaced_event(
            namespace,
            {
                "metadata": {"name": "e2", "labels": MANAGED},
                # MicroTime: the client re-serialises it, with the microseconds the API wants.
                "eventTime": datetime.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=datetime.UTC),
                "reportingController": "attack.example/test",
                "reportingInstance": "x",
                "action": "Test",
                "reason": "Test",
                "type": "Normal",
                "regarding": {"kind": "ConfigMap", "name": "cm", "namespace": namespace},
            },
        )
        # A controller's status write that touches metadata is the webhook's: CEL compared
        # object.metadata with oldObject.metadata and sent it, so it fails closed.
        with pytest.raises(k8s.ApiException) as touched:
            dc.patch_namespaced_deployment_status(
                "web", namespace, {"metadata": {"finalizers": ["attack.example/hold"]}}
            )
        assert touched.value.status == 500
        # A person's change to a managed object is not decided by identity: it fails closed.
        alice = k8s.CoreV1Api(stack.alice)
        with pytest.raises(k8s.ApiException) as excinfo:
            alice.patch_namespaced_config_map("cm", namespace, {"data": {"k": "alice"}})
        assert excinfo.value.status == 500
        message = json.loads(excinfo.value.body or "{}")["message"]
        assert f'failed calling webhook "{HOOK}"' in message
    finally:
        stack.webhook.start()
    assert gitops.read_namespaced_config_map("cm", namespace).data == {"k": "from-git"}
    apps = k8s.AppsV1Api(stack.gitops)
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 3
    assert gitops.read_namespaced_pod("p", namespace).spec.node_name == "n1"


def test_a_custom_resource_named_events_is_still_decided(stack: Stack, namespace: str) -> None:
    """Only core and events.k8s.io Events are skipped, not any resource called `events`."""
    group, plural = kit.CUSTOM_EVENTS
    body = {
        "apiVersion": f"{group}/v1",
        "kind": "Event",
        "metadata": {"name": "ev", "labels": MANAGED},
        "spec": {"replicas": 1},
    }
    k8s.CustomObjectsApi(stack.gitops).create_namespaced_custom_object(
        group, "v1", namespace, plural, body
    )
    alice = k8s.CustomObjectsApi(stack.alice)
    denied_message(
        lambda: alice.patch_namespaced_custom_object(
            group, "v1", namespace, plural, "ev", {"spec": {"replicas": 5}}
        )
    )
    denied_message(
        lambda: alice.delete_namespaced_custom_object(group, "v1", namespace, plural, "ev")
    )
