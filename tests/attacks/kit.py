"""Shared pieces of the attack tests: the configuration, RBAC for everyone, objects, clients."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from kubernetes import client as k8s

from tests.e2e.webhook_stack import BREAK_GLASS, GITOPS_NS, GITOPS_SA, MANAGED, REPO, Stack
from webhook import config as config_mod

WIDGETS = ("attack.gitwarden.dev", "widgets")
CUSTOM_EVENTS = ("attack.gitwarden.dev", "events")
PROTECTED = {"gitwarden.dev/protected": "true"}
HOLD = "attack.gitwarden.dev/hold"  # a finalizer nothing removes but the test itself
EVERYTHING = "attack-everything"  # the ClusterRole (and binding) that allows everyone everything

CONFIG = config_mod.AdmissionConfig(
    namespace=GITOPS_NS,
    gitops_service_account=GITOPS_SA,
    repository_url=REPO,
    default_path="clusters/test/",
    break_glass_groups=(BREAK_GLASS,),
    # The hardened GitOps identity: only tokens bound to the reconciler's pods count.
    require_pod_bound_token=True,
    pod_name_prefixes=("gitwarden-reconciler-",),
    scale_resources=(*config_mod.AdmissionConfig().scale_resources, WIDGETS),
    guarded_crd_groups=(WIDGETS[0],),
    # A cluster-scoped kind guarded whatever its labels say, with a status subresource.
    cluster_scoped_kinds=(config_mod.ClusterKind("", "PersistentVolume", "persistentvolumes"),),
)

# Controllers whose identities the attacks use (their tokens are minted by the harness).
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "horizontal-pod-autoscaler",
    "generic-garbage-collector",
    "namespace-controller",
    "root-ca-cert-publisher",
    "service-account-controller",
    "cronjob-controller",
    "coredns",
)


def grant_everything(admin: k8s.ApiClient) -> None:
    """alice, GitOps, a CI account and the controllers may do anything RBAC can grant."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    name = EVERYTHING
    role = {
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    }
    subjects: list[dict[str, str]] = [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-scheduler"},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:node:n1"},
        {"kind": "ServiceAccount", "namespace": "team-ci", "name": "ci"},
        {"kind": "ServiceAccount", "namespace": GITOPS_NS, "name": GITOPS_SA},
    ] + [{"kind": "ServiceAccount", "namespace": "kube-system", "name": c} for c in CONTROLLERS]
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    }
    for create in (rbac.create_cluster_role, rbac.create_cluster_role_binding):
        with contextlib.suppress(k8s.ApiException):
            create(role if create == rbac.create_cluster_role else binding)
    core = k8s.CoreV1Api(admin)
    for ns in ("team-ci", "kube-system", GITOPS_NS):
        with contextlib.suppress(k8s.ApiException):
            core.create_namespace({"metadata": {"name": ns}})


def install_widget_crd(admin: k8s.ApiClient) -> None:
    """Widgets (with a scale subresource) and a custom resource whose plural is `events`."""
    install_crd(admin, *WIDGETS, "Widget")
    install_crd(admin, *CUSTOM_EVENTS, "Event")


def remove_crds(admin: k8s.ApiClient) -> None:
    """Delete the package's CRDs (and so their custom resources) once the webhook is gone."""
    api = k8s.ApiextensionsV1Api(admin)
    for group, plural in (WIDGETS, CUSTOM_EVENTS):
        with contextlib.suppress(k8s.ApiException):  # 404: already gone
            api.delete_custom_resource_definition(f"{plural}.{group}")


def install_crd(admin: k8s.ApiClient, group: str, plural: str, kind: str) -> None:
    """A namespaced custom resource with status and scale (and wait until it is served)."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                }
            ],
        },
    }
    api = k8s.ApiextensionsV1Api(admin)
    with contextlib.suppress(k8s.ApiException):  # 409: an earlier package run made it
        api.create_custom_resource_definition(crd)
    custom = k8s.CustomObjectsApi(admin)
    deadline = time.monotonic() + 30
    while True:
        try:
            custom.list_cluster_custom_object(group, "v1", plural)
        except k8s.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pod(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    """A pod that never runs (no nodes): admission and the API server are all that act on it."""
    return {
        "metadata": {"name": name, "labels": labels if labels is not None else MANAGED, **meta},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }


def controller(stack: Stack, name: str) -> k8s.ApiClient:
    """A client acting as kube-system:<name> (kube-controller-manager's per-controller account)."""
    return stack.plane.as_service_account("kube-system", name)


def wait_for_root_ca(admin: k8s.ApiClient, namespace: str) -> None:
    """Wait until the real root-CA publisher has created kube-root-ca.crt in `namespace`."""
    core = k8s.CoreV1Api(admin)
    deadline = time.monotonic() + 30
    while not any(
        c.metadata.name == "kube-root-ca.crt"
        for c in core.list_namespaced_config_map(namespace).items
    ):
        assert time.monotonic() < deadline, f"no kube-root-ca.crt in {namespace}"
        time.sleep(0.1)


def protected_namespace(admin: k8s.ApiClient) -> str:
    name = unique("prot")
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": name, "labels": PROTECTED}})
    return name
