"""Manifests the reconcile end-to-end tests commit to their GitOps repositories.

Plain dictionaries, one function a kind, named by the test that asks for them so two tests never
share an object. The Roles in Git grant only verbs the reconciler's own ClusterRole holds (it
has no `escalate`/`bind`).
"""

from __future__ import annotations

from typing import Any

from tests.e2e import reconcile_stack

WIDGETS = f"widgets.{reconcile_stack.WIDGET_GROUP}"


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def configmap(ns: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def deployment(ns: str, name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def service(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def widget_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": WIDGETS},
        "spec": {
            "group": reconcile_stack.WIDGET_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def widget(ns: str, name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{reconcile_stack.WIDGET_GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"size": size},
    }


def _rules() -> list[dict[str, Any]]:
    return [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]


def role(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": _rules(),
    }


def role_binding(ns: str, name: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def cluster_role(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": _rules(),
    }


def small_app(ns: str, data: dict[str, str], sealed: dict[str, Any]) -> list[dict[str, Any]]:
    """A Namespace, a ConfigMap `settings`, a Deployment `web` and a SealedSecret: one file."""
    return [namespace(ns), configmap(ns, "settings", data), deployment(ns, "web"), sealed]


def change(kind: str, ns: str, name: str, action: str) -> str:
    """How a ChangeSet line names one object's outcome (`changeset.Change.__str__`)."""
    where = f"{ns}/{name}" if ns else name
    return f"{kind} {where} {action}"
