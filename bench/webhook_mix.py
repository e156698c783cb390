"""The varied AdmissionReview mix bench_webhook sends: what reaches the webhook in a busy cluster.

Owns building the bodies (each one distinct): people updating managed Deployments of about
5 KB with managedFields (in enforce and warn namespaces), ConfigMaps created, updated and
deleted, status writes (people's, and the deployment controller's that also move a revision
annotation, which the API server cannot decide by itself), the deployment controller's
revision annotations on the object, `kubectl scale` through the parent route, and the garbage
collector orphaning. Users, namespaces, names, images and resource versions vary, so no two
bodies and few policy inputs repeat. Deterministic (a seeded generator): every run sends the
same mix. No I/O.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

MANAGED = {"gitwarden.dev/managed": "true"}
PATH_ANNOTATION = "gitwarden.dev/source-path"
CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"
USERS = tuple(f"user-{i:02d}@example.com" for i in range(24))
TEAMS = ("team-a", "team-b", "team-c", "platform", "sre")
ENFORCED = tuple(f"app-{i}" for i in range(8))
WARNED = ("mode-warn",)
# Deployments the parent route looks up: the bench creates these in the cluster first.
_ENV = 18  # environment variables per container: with managedFields, a 5 KB Deployment
SCALED = tuple((ns, f"web-{i}") for ns in ENFORCED[:4] for i in range(3))


@dataclass(frozen=True)
class Body:
    """One request of the mix: the webhook path it is posted to and its bytes."""

    kind: str
    path: str
    body: bytes


def _meta(name: str, namespace: str, rng: random.Random, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.UUID(int=rng.getrandbits(128))),
        "resourceVersion": str(rng.randrange(10_000, 9_999_999)),
        "generation": rng.randrange(1, 40),
        "creationTimestamp": "2026-11-02T09:14:07Z",
        "labels": {**labels, "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop"},
        "annotations": {
            PATH_ANNOTATION: f"clusters/prod/{namespace}/{name}.yaml",
            "deployment.kubernetes.io/revision": str(rng.randrange(1, 30)),
        },
    }


def _managed_fields(rng: random.Random) -> list[dict[str, Any]]:
    spec_fields = {
        "f:metadata": {"f:labels": {"f:gitwarden.dev/managed": {}, "f:app.kubernetes.io/name": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"app"}': {
                            ".": {},
                            "f:env": {
                                f'k:{{"name":"VAR_{i}"}}': {".": {}, "f:name": {}, "f:value": {}}
                                for i in range(_ENV)
                            },
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {'k:{"containerPort":8080,"protocol":"TCP"}': {".": {}}},
                            "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}}},
                        }
                    }
                },
            },
        },
    }
    status_fields: dict[str, Any] = {
        "f:status": {
            "f:availableReplicas": {},
            "f:conditions": {'k:{"type":"Available"}': {".": {}, "f:status": {}}},
            "f:observedGeneration": {},
            "f:readyReplicas": {},
            "f:replicas": {},
            "f:updatedReplicas": {},
        }
    }
    stamp = f"2026-11-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z"
    return [
        {
            "manager": "gitwarden",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": stamp,
            "fieldsType": "FieldsV1",
            "fieldsV1": spec_fields,
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": stamp,
            "fieldsType": "FieldsV1",
            "fieldsV1": status_fields,
            "subresource": "status",
        },
    ]


def deployment(name: str, namespace: str, rng: random.Random) -> dict[str, Any]:
    """A managed Deployment of about 5 KB as the API server stores it."""
    meta = _meta(name, namespace, rng, MANAGED)
    meta["managedFields"] = _managed_fields(rng)
    replicas = rng.randrange(1, 6)
    container = {
        "name": "app",
        "image": f"registry.example.com/shop/{name}:1.{rng.randrange(50)}.{rng.randrange(9)}",
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": f"VAR_{i}", "value": f"value-{rng.getrandbits(32):08x}"} for i in range(_ENV)
        ],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
        "terminationMessagePath": "/dev/termination-log",
        "imagePullPolicy": "IfNotPresent",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [container],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "schedulerName": "default-scheduler",
                },
            },
        },
        "status": {
            "observedGeneration": meta["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "lastUpdateTime": "2026-11-02T09:15:00Z",
                    "lastTransitionTime": "2026-11-02T09:15:00Z",
                    "reason": r,
                    "message": f'ReplicaSet "{name}-{rng.getrandbits(32):08x}" has progressed.',
                }
                for t, r in (
                    ("Available", "MinimumReplicasAvailable"),
                    ("Progressing", "NewReplicaSetAvailable"),
                )
            ],
        },
    }


def configmap(name: str, namespace: str, rng: random.Random) -> dict[str, Any]:
    """A managed ConfigMap with a few keys of configuration."""
    meta = _meta(name, namespace, rng, MANAGED)
    meta["annotations"].pop("deployment.kubernetes.io/revision")
    keys = rng.randrange(2, 12)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {
            f"setting_{i}": f"{rng.getrandbits(64):016x}" * rng.randrange(1, 6) for i in range(keys)
        },
    }


def _review(  # noqa: PLR0917 - one AdmissionReview's fields, named at each call
    rng: random.Random,
    resource: tuple[str, str, str],
    kind: str,
    operation: str,
    user: str,
    groups: list[str],
    new: dict[str, Any] | None,
    old: dict[str, Any] | None,
    name: str,
    namespace: str,
    sub_resource: str = "",
) -> bytes:
    group, version, plural = resource
    gvk = {"group": group, "version": version, "kind": kind}
    request: dict[str, Any] = {
        "uid": str(uuid.UUID(int=rng.getrandbits(128))),
        "kind": gvk,
        "resource": {"group": group, "version": version, "resource": plural},
        "requestKind": gvk,
        "requestResource": {"group": group, "version": version, "resource": plural},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "uid": str(rng.getrandbits(64)), "groups": groups},
        "object": new,
        "oldObject": old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


_APPS = ("apps", "v1", "deployments")
_CORE_CM = ("", "v1", "configmaps")


def _person(rng: random.Random) -> tuple[str, list[str]]:
    return rng.choice(USERS), [rng.choice(TEAMS), "system:authenticated"]


def _human_deployment_update(rng: random.Random, i: int) -> Body:
    namespace = rng.choice(ENFORCED + WARNED)
    name = f"svc-{i % 97}"
    old = deployment(name, namespace, rng)
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = old["spec"]["replicas"] + rng.randrange(1, 4)
    if rng.random() < 0.5:
        new["spec"]["template"]["spec"]["containers"][0]["image"] += "-hotfix"
    user, groups = _person(rng)
    body = _review(rng, _APPS, "Deployment", "UPDATE", user, groups, new, old, name, namespace)
    return Body("human-deployment-update", "/validate", body)


def _configmap_write(rng: random.Random, i: int) -> Body:
    namespace = rng.choice(ENFORCED)
    name = f"config-{i % 211}"
    user, groups = _person(rng)
    old = configmap(name, namespace, rng)
    operation = rng.choice(("CREATE", "UPDATE", "UPDATE", "DELETE"))
    new: dict[str, Any] | None = copy.deepcopy(old)
    if operation == "UPDATE" and new is not None:
        new["data"]["setting_0"] = "changed-by-hand"
    if operation == "CREATE":
        old = None  # type: ignore[assignment]
    if operation == "DELETE":
        new = None
    body = _review(rng, _CORE_CM, "ConfigMap", operation, user, groups, new, old, name, namespace)
    return Body(f"configmap-{operation.lower()}", "/validate", body)


def _status_write(rng: random.Random, i: int) -> Body:
    namespace = rng.choice(ENFORCED)
    name = f"svc-{i % 97}"
    old = deployment(name, namespace, rng)
    new = copy.deepcopy(old)
    new["status"]["readyReplicas"] = max(0, old["status"]["readyReplicas"] - 1)
    new["metadata"]["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 1)
    if rng.random() < 0.6:
        # The controller moves the revision with status: only the webhook can decide that.
        user, groups = CONTROLLER, ["system:serviceaccounts", "system:authenticated"]
        revision = str(int(old["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) + 1)
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = revision
        kind = "controller-status-write"
    else:
        user, groups = _person(rng)
        kind = "human-status-write"
    body = _review(
        rng, _APPS, "Deployment", "UPDATE", user, groups, new, old, name, namespace, "status"
    )
    return Body(kind, "/validate", body)


def _controller_revision(rng: random.Random, i: int) -> Body:
    namespace = rng.choice(ENFORCED)
    name = f"svc-{i % 97}"
    old = deployment(name, namespace, rng)
    new = copy.deepcopy(old)
    revision = str(int(old["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) + 1)
    new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = revision
    groups = ["system:serviceaccounts", "system:authenticated"]
    body = _review(
        rng, _APPS, "Deployment", "UPDATE", CONTROLLER, groups, new, old, name, namespace
    )
    return Body("controller-revision-annotation", "/validate", body)


def _scale(rng: random.Random, _i: int) -> Body:
    namespace, name = rng.choice(SCALED)
    user, groups = _person(rng)
    scale: dict[str, Any] = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": str(rng.randrange(10_000, 99_999)),
        },
        "spec": {"replicas": rng.randrange(1, 9)},
        "status": {"replicas": 2, "selector": f"app={name}"},
    }
    old = copy.deepcopy(scale)
    old["spec"]["replicas"] = 2
    gvk = ("autoscaling", "v1", "deployments")
    body = _review(rng, gvk, "Scale", "UPDATE", user, groups, scale, old, name, namespace, "scale")
    # The review's kind is autoscaling/v1 Scale; its resource is apps/v1 deployments.
    review = json.loads(body)
    review["request"]["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    review["request"]["requestResource"] = review["request"]["resource"]
    return Body("human-scale", "/validate/parent", json.dumps(review).encode())


def _orphan(rng: random.Random, i: int) -> Body:
    namespace = rng.choice(ENFORCED)
    old = configmap(f"child-{i % 53}", namespace, rng)
    old["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "parent",
            "uid": "u-parent",
            "controller": True,
        }
    ]
    old["metadata"]["finalizers"] = ["orphan"]
    new = copy.deepcopy(old)
    del new["metadata"]["ownerReferences"]
    del new["metadata"]["finalizers"]
    groups = ["system:serviceaccounts", "system:authenticated"]
    name = old["metadata"]["name"]
    body = _review(rng, _CORE_CM, "ConfigMap", "UPDATE", GC, groups, new, old, name, namespace)
    return Body("gc-orphan", "/validate", body)


# (builder, share of the mix)
_SHARES = (
    (_human_deployment_update, 40),
    (_configmap_write, 15),
    (_status_write, 20),
    (_controller_revision, 10),
    (_scale, 10),
    (_orphan, 5),
)


def build(count: int = 1200, seed: int = 14) -> list[Body]:
    """`count` distinct bodies in the mix's shares, interleaved (deterministic)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible mix, not a secret
    builders = [b for b, share in _SHARES for _ in range(share)]
    bodies = [rng.choice(builders)(rng, i) for i in range(count)]
    if len({b.body for b in bodies}) != count:
        raise AssertionError("the mix repeats a body")
    return bodies
