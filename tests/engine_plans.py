"""ApplyPlans made from plain values, for apply and status tests (no dependency on plan.build).

Stamps objects the way the plan stage does (managed label, source-path annotation, ApplySet
part-of label) and sorts them into stages by kind, so tests state only the manifests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from reconciler import applyplan, config, manifests, objectref, secret_value, status, verify

APPLYSET = status.applyset_id("gitwarden-test")
COMMIT = "a" * 40
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}


def ref_of(body: Mapping[str, Any]) -> objectref.ObjectRef:
    """The ObjectRef of a manifest."""
    group = str(body["apiVersion"]).rpartition("/")[0]
    meta = body["metadata"]
    return objectref.ObjectRef(group, body["kind"], meta.get("namespace", ""), meta["name"])


def stamped(body: Mapping[str, Any], source: str, applyset: str = APPLYSET) -> dict[str, Any]:
    """A copy of `body` with the labels and annotation the plan stage adds."""
    out: dict[str, Any] = json.loads(json.dumps(body))
    meta = out.setdefault("metadata", {})
    meta.setdefault("labels", {}).update(
        {
            config.MANAGED_LABEL_KEY: config.MANAGED_LABEL_VALUE,
            status.APPLYSET_PART_OF_LABEL: applyset,
        }
    )
    meta.setdefault("annotations", {})[config.SOURCE_PATH_ANNOTATION] = source
    return out


def planned(
    body: Mapping[str, Any],
    source: str = "apps/app.yaml",
    *,
    recreate: bool = False,
    applyset: str = APPLYSET,
) -> applyplan.PlannedObject:
    """One planned object, its digest a hash of the stamped body."""
    full = stamped(body, source, applyset)
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()
    return applyplan.PlannedObject(
        ref=ref_of(full),
        source=source,
        digest=digest,
        body=manifests.freeze(full),
        recreate_allowed=recreate,
    )


def planned_secret(
    namespace: str,
    name: str,
    values: Mapping[str, bytes],
    source: str = "apps/sealed.yaml",
    *,
    applyset: str = APPLYSET,
) -> applyplan.PlannedObject:
    """A Secret as decrypt hands it on: values wrapped, digest of the (pretend) ciphertext."""
    meta = stamped({"metadata": {}}, source, applyset)["metadata"]
    secret = manifests.DecryptedSecret(
        source=source,
        namespace=namespace,
        name=name,
        metadata=manifests.freeze(meta),
        type="Opaque",
        immutable=None,
        data=MappingProxyType({k: secret_value.SecretValue(v) for k, v in values.items()}),
    )
    sealed = hashlib.sha256(repr(sorted((k, len(v)) for k, v in values.items())).encode())
    for value in values.values():
        sealed.update(hashlib.sha256(value).digest())  # stands in for the ciphertext digest
    return applyplan.PlannedObject(
        ref=objectref.ObjectRef("", "Secret", namespace, name),
        source=source,
        digest=sealed.hexdigest(),
        secret=secret,
    )


def stage_of(obj: applyplan.PlannedObject) -> applyplan.Stage:
    if obj.ref.kind == "CustomResourceDefinition":
        return applyplan.Stage.CRDS
    if obj.ref.kind == "Namespace":
        return applyplan.Stage.NAMESPACES
    if obj.ref.kind in CLUSTER_KINDS:
        return applyplan.Stage.CLUSTER
    return applyplan.Stage.NAMESPACED


def plan_of(
    objects: Iterable[applyplan.PlannedObject],
    *,
    previous: applyplan.Inventory | None = None,
    prune: Iterable[objectref.ObjectRef] = (),
    kept: Iterable[tuple[objectref.ObjectRef, str]] = (),
    commit: str = COMMIT,
    applyset: str = APPLYSET,
) -> applyplan.ApplyPlan:
    """An ApplyPlan with the objects in stage order."""
    objs = list(objects)
    stages = tuple(
        applyplan.StagePlan(stage, tuple(o for o in objs if stage_of(o) is stage))
        for stage in applyplan.Stage
    )
    revision = verify.VerifiedRevision(
        git_dir="/nonexistent", commit=commit, since=None, mode=verify.Mode.ALL, signers=()
    )
    return applyplan.ApplyPlan(
        revision=revision,
        applyset_id=applyset,
        stages=tuple(s for s in stages if s.objects),
        prune=tuple(prune),
        kept=tuple(kept),
        previous=previous or applyplan.Inventory(),
    )


def configmap(namespace: str, name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def deployment(namespace: str, name: str, image: str = "app:1", app: str = "") -> dict[str, Any]:
    labels = {"app": app or name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
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
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
