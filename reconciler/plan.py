"""The plan stage (pure): decrypted manifests and the last inventory in, an `ApplyPlan` out.

Owns the stage and kind order, the stamping of every object (managed label, source-path
annotation, ApplySet part-of label), the digest that lets apply skip unchanged objects, and the
prune decision with its guards as data:
* only objects in the previous inventory are ever pruned (apply also checks our label live);
* `apply.prune: false` keeps everything that left Git;
* protected kinds (`apply.protected_kinds`) are kept unless the object, as last applied from
  Git, was annotated `gitwarden.dev/prune: allow` (read from the inventory entry: a signed
  commit said so, not whoever can edit the live object);
* a revision that renders nothing, or a configured path that renders nothing, is
  `NothingToApply` (Stalled) and deletes nothing, unless `apply.allow_prune_to_empty`.
Deletions come in reverse apply order. Inside a stage, Roles and ClusterRoles form a wave of
their own before the rest (apply runs a wave in parallel; a binding needs its role to exist).
What Git sets for the stamped keys is overwritten: the label, the ApplySet and the file name
are GitWarden's to say. A Secret in GitWarden's own namespace that is, or poses as, a sealing
key (`ReservedObject`) is refused: keys are made by the key service, never taken from Git. No
I/O; plain values in and out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler import applyplan, config, errors, manifests, objectref

PART_OF_LABEL = "applyset.kubernetes.io/part-of"
PRUNE_ANNOTATION = "gitwarden.dev/prune"
RECREATE_ANNOTATION = "gitwarden.dev/recreate"
ALLOW = "allow"
SYNC_KIND = "Sync"
SYNC_GROUP = "gitwarden.dev"
# How the key store (`reconciler.services.kube_keys`) finds sealing keys; a test asserts the
# two agree (plan may not import it: it reaches the kubernetes client).
SEALING_KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
SEALING_KEY_PREFIX = "sealed-secrets-key"

# Inside a stage: what others refer to first (accounts, RBAC, configuration, storage), then
# Services before the workloads that use them, then what points at workloads. Kinds not listed
# (custom resources, mostly) come last, by name.
KIND_ORDER: tuple[str, ...] = (
    "PriorityClass",
    "StorageClass",
    "IngressClass",
    "RuntimeClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "PodDisruptionBudget",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "Ingress",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
)
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}
_ROLE_KINDS = frozenset(
    {("rbac.authorization.k8s.io", "Role"), ("rbac.authorization.k8s.io", "ClusterRole")}
)
_STAGE_RANK = {stage: i for i, stage in enumerate(applyplan.Stage)}


class PlanError(errors.Stalled):
    """The revision cannot be planned as it is."""


class NothingToApply(PlanError):
    """The revision (or a configured path) renders zero objects; nothing is applied or deleted."""


class DuplicateObject(PlanError):
    """A Secret from a SealedSecret and another object are the same object."""


class ReservedObject(PlanError):
    """Git declares a Secret that the key ring would read as a sealing key."""


def applyset_id(
    name: str, namespace: str = "", kind: str = SYNC_KIND, group: str = SYNC_GROUP
) -> str:
    """The ApplySet id of a parent, as the ApplySet spec (KEP-3659) defines it."""
    digest = hashlib.sha256(f"{name}.{namespace}.{kind}.{group}".encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}-v1"


def stage_of(ref: objectref.ObjectRef) -> applyplan.Stage:
    """Which stage applies `ref`."""
    if (ref.group, ref.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        return applyplan.Stage.CRDS
    if (ref.group, ref.kind) == ("", "Namespace"):
        return applyplan.Stage.NAMESPACES
    return applyplan.Stage.CLUSTER if not ref.namespace else applyplan.Stage.NAMESPACED


def order_key(ref: objectref.ObjectRef) -> tuple[int, int, str, str, str, str]:
    """Apply order: stage, then kind rank, then group, kind, namespace, name."""
    rank = _RANK.get(ref.kind, len(KIND_ORDER))
    return (_STAGE_RANK[stage_of(ref)], rank, ref.group, ref.kind, ref.namespace, ref.name)


def build(
    decrypted: manifests.DecryptedManifests,
    inventory: applyplan.Inventory,
    settings: config.ReconcilerConfig,
) -> applyplan.ApplyPlan:
    """The ordered, stamped plan for `decrypted`, and what to prune from `inventory`."""
    set_id = applyset_id(settings.identity.name)
    stamp = _Stamp(settings.apply, set_id)
    planned: dict[objectref.ObjectRef, applyplan.PlannedObject] = {}
    _refuse_sealing_keys(decrypted, settings.identity.namespace)
    for obj in [
        *(stamp.manifest(m) for m in decrypted.manifests),
        *(stamp.secret(s) for s in decrypted.secrets),
    ]:
        if obj.ref in planned:
            raise DuplicateObject(
                f"{obj.ref.display()} is declared twice: {planned[obj.ref].source} and {obj.source}"
            )
        planned[obj.ref] = obj
    _never_to_empty(decrypted, planned, settings.apply)
    ordered = sorted(planned.values(), key=lambda o: order_key(o.ref))
    stages = tuple(
        wave
        for stage in applyplan.Stage
        for wave in _waves(stage, [o for o in ordered if stage_of(o.ref) is stage])
    )
    prune, kept = _prune(inventory, set(planned), settings.apply)
    return applyplan.ApplyPlan(
        revision=decrypted.verified,
        applyset_id=set_id,
        stages=stages,
        prune=prune,
        kept=kept,
        previous=inventory,
    )


def _waves(
    stage: applyplan.Stage, objects: list[applyplan.PlannedObject]
) -> tuple[applyplan.StagePlan, ...]:
    """A stage as one or two StagePlans: Roles and ClusterRoles first, when there are any.

    Apply runs the objects of one StagePlan in parallel. The API server refuses (404) a
    binding to a role that does not exist yet unless the applier may `bind` any role, which
    GitWarden's identity should not hold; so roles get a wave of their own before the rest.
    """
    roles = tuple(o for o in objects if (o.ref.group, o.ref.kind) in _ROLE_KINDS)
    rest = tuple(o for o in objects if (o.ref.group, o.ref.kind) not in _ROLE_KINDS)
    first = (applyplan.StagePlan(stage, roles),) if roles else ()
    return (*first, applyplan.StagePlan(stage, rest))


class _Stamp:
    """Adds GitWarden's label, annotation and ApplySet label; computes each object's digest."""

    def __init__(self, settings: config.ApplyConfig, set_id: str) -> None:
        self._settings = settings
        self._set_id = set_id

    def _metadata(self, meta: Mapping[str, Any], source: str) -> dict[str, Any]:
        stamped: dict[str, Any] = manifests.thaw(meta)
        labels = _string_map(stamped, "labels", source)
        labels[self._settings.managed_label_key] = self._settings.managed_label_value
        labels[PART_OF_LABEL] = self._set_id
        annotations = _string_map(stamped, "annotations", source)
        annotations[self._settings.source_path_annotation] = source
        stamped["labels"], stamped["annotations"] = labels, annotations
        return stamped

    def manifest(self, manifest: manifests.Manifest) -> applyplan.PlannedObject:
        body = manifests.thaw(manifest.body)
        body["metadata"] = self._metadata(manifest.metadata, manifest.source)
        frozen = manifests.freeze(body)
        return applyplan.PlannedObject(
            ref=manifest.ref,
            source=manifest.source,
            digest=manifests.digest(frozen),
            body=frozen,
            recreate_allowed=_allows(manifest.metadata, RECREATE_ANNOTATION),
            prune_allowed=_allows(manifest.metadata, PRUNE_ANNOTATION),
        )

    def secret(self, secret: manifests.DecryptedSecret) -> applyplan.PlannedObject:
        meta = self._metadata(secret.metadata, secret.source)
        stamped = manifests.DecryptedSecret(
            source=secret.source,
            namespace=secret.namespace,
            name=secret.name,
            metadata=manifests.freeze(meta),
            type=secret.type,
            immutable=secret.immutable,
            data=secret.data,
            sealed_digest=secret.sealed_digest,
        )
        # The digest covers the SealedSecret (ciphertext) and the stamped shape, never values.
        shape = {"sealed": secret.sealed_digest, "metadata": meta, "type": secret.type}
        return applyplan.PlannedObject(
            ref=objectref.ObjectRef("", "Secret", secret.namespace, secret.name),
            source=secret.source,
            digest=manifests.digest({**shape, "immutable": secret.immutable}),
            secret=stamped,
            recreate_allowed=_allows(secret.metadata, RECREATE_ANNOTATION),
            prune_allowed=_allows(secret.metadata, PRUNE_ANNOTATION),
        )


def _refuse_sealing_keys(decrypted: manifests.DecryptedManifests, namespace: str) -> None:
    """Refuse a Secret in GitWarden's namespace labelled or named like a sealing key.

    Why: the commit policy judges paths, not what a file declares, so a signer trusted only
    for some application path could otherwise add a key to the ring (the newest key's
    certificate is what kubeseal seals new secrets for) or, by a key Secret's name, overwrite
    a real key's `tls.key` through server-side apply.
    """
    candidates = [
        (m.source, m.name, m.metadata)
        for m in decrypted.manifests
        if (m.ref.group, m.ref.kind) == ("", "Secret") and m.namespace == namespace
    ]
    candidates += [
        (s.source, s.name, s.metadata) for s in decrypted.secrets if s.namespace == namespace
    ]
    for source, name, meta in candidates:
        labels = meta.get("labels")
        labelled = isinstance(labels, Mapping) and SEALING_KEY_LABEL in labels
        if labelled or name.startswith(SEALING_KEY_PREFIX):
            raise ReservedObject(
                f"{source}: Secret {namespace}/{name} would be read as a sealing key"
                f" ({SEALING_KEY_LABEL} label or {SEALING_KEY_PREFIX}* name in GitWarden's"
                " namespace); sealing keys come from the key service, never from Git"
            )


def _string_map(meta: Mapping[str, Any], field: str, source: str) -> dict[str, Any]:
    """`metadata.<field>` as a new dict, or PlanError: `dict()` of a list or a string would
    crash, or (`[ab]` → {"a": "b"}) quietly invent labels nobody wrote."""
    value = meta.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise PlanError(f"{source}: metadata.{field} must be a mapping of strings to strings")
    return dict(value)


def _allows(meta: Mapping[str, Any], annotation: str) -> bool:
    annotations = meta.get("annotations")
    return isinstance(annotations, Mapping) and annotations.get(annotation) == ALLOW


def _never_to_empty(
    decrypted: manifests.DecryptedManifests,
    planned: Mapping[objectref.ObjectRef, applyplan.PlannedObject],
    settings: config.ApplyConfig,
) -> None:
    if settings.allow_prune_to_empty:
        return
    commit = decrypted.revision[:12]
    if not planned:
        raise NothingToApply(
            f"revision {commit} renders zero objects under the configured paths: nothing was"
            " applied or deleted (set apply.allow_prune_to_empty to delete everything)"
        )
    if decrypted.empty_paths:
        paths = ", ".join(decrypted.empty_paths)
        raise NothingToApply(
            f"revision {commit}: configured path(s) {paths} render zero objects: nothing was"
            " applied or deleted (fix the path, or set apply.allow_prune_to_empty)"
        )


def _prune(
    inventory: applyplan.Inventory,
    desired: Iterable[objectref.ObjectRef],
    settings: config.ApplyConfig,
) -> tuple[tuple[objectref.ObjectRef, ...], tuple[tuple[objectref.ObjectRef, str], ...]]:
    gone = sorted(set(inventory.entries) - set(desired), key=order_key, reverse=True)
    protected = set(settings.protected_kinds)
    prune: list[objectref.ObjectRef] = []
    kept: list[tuple[objectref.ObjectRef, str]] = []
    for ref in gone:
        if not settings.prune:
            kept.append((ref, "pruning is turned off (apply.prune)"))
        elif ref.group_kind in protected and not inventory.entries[ref].prune_allowed:
            kept.append(
                (ref, f"protected kind: annotate it {PRUNE_ANNOTATION}: {ALLOW} in Git first")
            )
        else:
            prune.append(ref)
    return tuple(prune), tuple(kept)
