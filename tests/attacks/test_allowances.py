"""Attack: use an allowance meant for one controller to change managed objects.

Before: `system:serviceaccounts:kube-system` (every add-on's account) could create anything
named as a controller child in a protected namespace and delete managed pods; the root-CA
publisher could edit any managed ConfigMap and the service-account controller any account;
the garbage collector and the namespace controller could delete any managed object at any
time. Now each allowance names its controllers, operations and objects.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.attacks import kit
from tests.e2e.webhook_stack import MANAGED, Stack, configmap, denied_message, wait_until
from tests.harness import controllers

pytestmark = pytest.mark.cluster

PROTECTED_HOOK = "protected-namespaces.gitwarden.gitwarden.dev"


def _owned_by_replicaset(name: str) -> dict[str, object]:
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-5d8f",
        "uid": "6a1f4c52-0d0e-4c47-9b8e-000000000001",
        "controller": True,
    }
    return kit.pod(name, labels={"app": "web"}, ownerReferences=[ref])


def test_an_add_on_account_in_kube_system_is_not_a_controller(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """coredns's account neither creates pods in a protected namespace nor deletes managed ones."""
    ns = kit.protected_namespace(admin)
    coredns = k8s.CoreV1Api(kit.controller(stack, "coredns"))
    denied_message(lambda: coredns.create_namespaced_pod(ns, kit.pod("x", {})), PROTECTED_HOOK)
    k8s.CoreV1Api(stack.gitops).create_namespaced_pod(namespace, kit.pod("p"))
    denied_message(lambda: coredns.delete_namespaced_pod("p", namespace))


def test_children_need_the_named_controller_and_an_owner_reference(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """In a protected namespace the ReplicaSet controller creates only pods a ReplicaSet owns."""
    ns = kit.protected_namespace(admin)
    rs = k8s.CoreV1Api(kit.controller(stack, "replicaset-controller"))
    denied_message(lambda: rs.create_namespaced_pod(ns, kit.pod("orphan", {})), PROTECTED_HOOK)
    rs.create_namespaced_pod(ns, _owned_by_replicaset("web-5d8f-abcde"))
    deployer = k8s.CoreV1Api(kit.controller(stack, "deployment-controller"))
    denied_message(
        lambda: deployer.create_namespaced_pod(ns, _owned_by_replicaset("web-5d8f-fghij")),
        PROTECTED_HOOK,
    )


def test_root_ca_publisher_may_write_only_kube_root_ca(
    stack: Stack, admin: k8s.ApiClient, namespace: str
) -> None:
    """The publisher creates kube-root-ca.crt anywhere, and edits no other managed ConfigMap."""
    publisher = k8s.CoreV1Api(kit.controller(stack, "root-ca-cert-publisher"))
    ns = kit.protected_namespace(admin)
    # The real publisher (kube-controller-manager runs) creates it in the protected namespace.
    kit.wait_for_root_ca(admin, ns)
    publisher.patch_namespaced_config_map("kube-root-ca.crt", ns, {"data": {"k": "v"}})
    denied_message(
        lambda: publisher.create_namespaced_config_map(ns, configmap("other")), PROTECTED_HOOK
    )
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    denied_message(
        lambda: publisher.patch_namespaced_config_map("cm", namespace, {"data": {"k": "x"}})
    )


def test_root_ca_publisher_cannot_unlabel_or_repoint_a_managed_root_ca(
    stack: Stack, namespace: str
) -> None:
    """Its allowance is decided in the API server, which must check what an update changes.

    Before: CEL skipped every UPDATE of kube-root-ca.crt by the publisher, so it removed the
    managed label of one GitOps manages (the policy, never asked, denies that). Data updates,
    its job, are still skipped and allowed.
    """
    gitops = k8s.CoreV1Api(stack.gitops)
    # The real publisher made it; GitOps takes it over (as a repository declaring it would).
    kit.wait_for_root_ca(stack.plane.admin(), namespace)
    gitops.patch_namespaced_config_map(
        "kube-root-ca.crt", namespace, {"metadata": {"labels": MANAGED}}
    )
    publisher = k8s.CoreV1Api(kit.controller(stack, "root-ca-cert-publisher"))
    unlabel = {"metadata": {"labels": {"gitwarden.dev/managed": None}}}
    denied_message(
        lambda: publisher.patch_namespaced_config_map("kube-root-ca.crt", namespace, unlabel)
    )
    repoint = {"metadata": {"annotations": {"gitwarden.dev/source-path": "phish: see evil"}}}
    denied_message(
        lambda: publisher.patch_namespaced_config_map("kube-root-ca.crt", namespace, repoint)
    )
    rotated = publisher.patch_namespaced_config_map(
        "kube-root-ca.crt", namespace, {"data": {"ca.crt": "rotated"}}
    )
    assert rotated.data["ca.crt"] == "rotated"
    # (The real publisher then writes the true CA back: its data update is allowed too.)
    stored = gitops.read_namespaced_config_map("kube-root-ca.crt", namespace)
    assert stored.metadata.labels == MANAGED
    assert "gitwarden.dev/source-path" not in (stored.metadata.annotations or {})


def test_service_account_controller_may_create_only_default(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """`default` by the service-account controller; any other name is a protected create."""
    ns = kit.protected_namespace(admin)
    sac = k8s.CoreV1Api(kit.controller(stack, "service-account-controller"))
    # The real controller creates `default` in the protected namespace; its identity may.
    wait_until(
        lambda: any(
            a.metadata.name == "default" for a in sac.list_namespaced_service_account(ns).items
        ),
        "the default ServiceAccount",
    )
    denied_message(
        lambda: sac.create_namespaced_service_account(ns, {"metadata": {"name": "builder"}}),
        PROTECTED_HOOK,
    )


def test_garbage_collector_deletes_only_dependents(stack: Stack, namespace: str) -> None:
    """An object without ownerReferences is no GC dependent: its delete is denied."""
    gitops = k8s.CoreV1Api(stack.gitops)
    gitops.create_namespaced_config_map(namespace, configmap("owner", MANAGED))
    gitops.create_namespaced_config_map(namespace, configmap("alone", MANAGED))
    owner = gitops.read_namespaced_config_map("owner", namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    dependent = configmap("dependent", MANAGED)
    dependent["metadata"]["ownerReferences"] = [ref]
    gitops.create_namespaced_config_map(namespace, dependent)
    gc = k8s.CoreV1Api(kit.controller(stack, "generic-garbage-collector"))
    denied_message(lambda: gc.delete_namespaced_config_map("alone", namespace))
    gc.delete_namespaced_config_map("dependent", namespace)
    names = set(controllers.own_names(gitops.list_namespaced_config_map(namespace).items))
    assert names == {"owner", "alone"}


def test_namespace_controller_deletes_only_in_a_terminating_namespace(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """The namespace controller's delete is allowed once the namespace is being deleted."""
    ns = kit.unique("ns-ctl")
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": ns}})
    gitops = k8s.CoreV1Api(stack.gitops)
    gitops.create_namespaced_config_map(ns, configmap("a", MANAGED))
    gitops.create_namespaced_config_map(ns, configmap("b", MANAGED))
    nsc = k8s.CoreV1Api(kit.controller(stack, "namespace-controller"))
    denied_message(lambda: nsc.delete_namespaced_config_map("a", ns))
    # A finalizer no controller removes keeps "b", and so the namespace, Terminating.
    hold = {"metadata": {"finalizers": [kit.HOLD]}}
    gitops.patch_namespaced_config_map("b", ns, hold)
    # GitOps deletes the namespace (it holds managed objects, so only GitOps may); the real
    # namespace controller then deletes "a" and marks "b", as its identity now may.
    k8s.CoreV1Api(stack.gitops).delete_namespace(ns)
    wait_until(
        lambda: controllers.own_names(gitops.list_namespaced_config_map(ns).items) == ["b"],
        "the namespace controller to delete the ConfigMap",
    )
    assert gitops.read_namespaced_config_map("b", ns).metadata.deletion_timestamp is not None
    assert core.read_namespace(ns).status.phase == "Terminating"
    # Let the namespace go.
    gitops.patch_namespaced_config_map("b", ns, {"metadata": {"finalizers": None}})


def test_an_unlabelled_cronjob_in_a_protected_namespace_cannot_be_repurposed(
    stack: Stack, admin: k8s.ApiClient
) -> None:
    """Editing it is denied (its Jobs are the controller's to create); the controller still can."""
    ns = kit.protected_namespace(admin)
    cronjob = {
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "registry.invalid/job:1"}],
                        }
                    }
                }
            },
        },
    }
    created = k8s.BatchV1Api(stack.gitops).create_namespaced_cron_job(ns, cronjob)
    alice = k8s.BatchV1Api(stack.alice)
    evil = {"spec": {"schedule": "* * * * *"}}
    denied_message(lambda: alice.patch_namespaced_cron_job("nightly", ns, evil), PROTECTED_HOOK)
    job = {
        "metadata": {
            "name": "nightly-1",
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": "nightly",
                    "uid": created.metadata.uid,
                    "controller": True,
                }
            ],
        },
        "spec": cronjob["spec"]["jobTemplate"]["spec"],
    }
    k8s.BatchV1Api(kit.controller(stack, "cronjob-controller")).create_namespaced_job(ns, job)
    assert k8s.BatchV1Api(stack.gitops).read_namespaced_cron_job("nightly", ns).spec.schedule == (
        "0 3 * * *"
    )
