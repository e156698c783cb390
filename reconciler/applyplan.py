"""The values between plan and apply: `Inventory` (what the last pass applied) and `ApplyPlan`.

Owns the shapes only: the ordered stages, each planned object with its stamped body and the
digest that tells an unchanged object from a changed one without asking the API server, and the
prune set. `plan.build` makes an ApplyPlan (pure); `apply.run` executes one; the cluster adapter
reads and writes the Inventory. A planned Secret keeps its values wrapped (`DecryptedSecret`)
until the apply stage asks for the body. Must not import any stage or third-party library.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from reconciler import manifests, objectref

if TYPE_CHECKING:  # only the type: values sit below the stages (import-linter layers)
    from reconciler import verify


class Stage(enum.Enum):
    """Apply order; prune deletes in the reverse order. The value is the name Changes carry."""

    CRDS = "crds"  # then wait until Established and refresh discovery
    NAMESPACES = "namespaces"
    CLUSTER = "cluster"  # other cluster-scoped kinds (ClusterRoles, ...)
    NAMESPACED = "namespaced"


@dataclass(frozen=True)
class InventoryEntry:
    """What the last pass applied for one object: the desired digest and the live version after.

    `resource_version` is the object's resourceVersion right after GitWarden's apply; a live
    object still at that version has not been touched since, so a no-op pass needs no request
    for it. `source` is the path in Git the object came from.
    """

    digest: str
    resource_version: str
    source: str
    prune_allowed: bool = False
    """The object, as last applied from Git, carried `gitwarden.dev/prune: allow`."""


@dataclass(frozen=True)
class Inventory:
    """Every object the last successful pass applied, as stored in the cluster."""

    commit: str | None = None
    entries: Mapping[objectref.ObjectRef, InventoryEntry] = field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclass(frozen=True)
class PlannedObject:
    """One object to apply: its ref, the file it came from, and exactly one of body or secret.

    `body` is the deep-frozen manifest, already stamped with the managed label, the source-path
    annotation and the ApplySet part-of label. `secret` is a Secret opened from a SealedSecret,
    stamped the same way through its metadata; its values are revealed only by `body_for_apply`.
    `digest` is a hash of what is desired (for a Secret: of the SealedSecret, never of values).
    `recreate_allowed` is set when the object is annotated to be recreated on an immutable-field
    change; `prune_allowed` when it is annotated so that a protected kind may be pruned later
    (apply records it in the inventory entry, which is where plan reads it).
    """

    ref: objectref.ObjectRef
    source: str
    digest: str
    body: Mapping[str, Any] | None = None
    secret: manifests.DecryptedSecret | None = None
    recreate_allowed: bool = False
    prune_allowed: bool = False

    def __post_init__(self) -> None:
        if (self.body is None) == (self.secret is None):
            raise ValueError(f"{self.ref}: a planned object has exactly one of body and secret")

    @property
    def is_secret(self) -> bool:
        return self.secret is not None

    def body_for_apply(self) -> dict[str, Any]:
        """A mutable body for the API client; for a Secret this is where plaintext appears."""
        if self.secret is not None:
            return self.secret.body_for_apply()
        thawed: dict[str, Any] = manifests.thaw(self.body)
        return thawed


@dataclass(frozen=True)
class StagePlan:
    """The objects of one stage, in apply order."""

    stage: Stage
    objects: tuple[PlannedObject, ...]


@dataclass(frozen=True)
class ApplyPlan:
    """What apply must do for one verified revision: stages in order, then the prune set.

    `prune` lists objects of the previous inventory that left Git and may be deleted (guards
    already applied: protected kinds and the never-to-empty rule are decided by plan), in
    deletion order. `kept` lists objects that left Git but are kept, each with the reason.
    """

    revision: verify.VerifiedRevision
    applyset_id: str
    stages: tuple[StagePlan, ...]
    prune: tuple[objectref.ObjectRef, ...]
    kept: tuple[tuple[objectref.ObjectRef, str], ...]
    previous: Inventory

    def objects(self) -> tuple[PlannedObject, ...]:
        """Every planned object, in apply order."""
        return tuple(obj for stage in self.stages for obj in stage.objects)
