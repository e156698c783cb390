"""The ports the pipeline talks through: where a pass gets its inputs and hands its plan.

Owns only the shapes (Protocols) and the `Ports` bundle the entry point builds once: the Git
source, the trust and commit policy, the sealing-key ring, the cluster, the applier and the
cache of opened sealed values. Real adapters live beside (gitsource, services.kube_keys, the cluster
adapter); unit tests pass fakes of these ports. Must not import `kubernetes`, run processes or
hold state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from reconciler import applyplan, changeset, commitpolicy, decrypt, gitsource, verify
from reconciler.sealed import keys


class Source(Protocol):
    """The configured repository and branch."""

    def fetch(self, since: str) -> gitsource.Checkout:
        """The branch tip with history back to `since` (the anchor or the last applied commit)."""
        ...


class Keys(Protocol):
    """The sealing keys (in the cluster: Secrets labelled like the sealed-secrets controller's)."""

    def ring(self) -> keys.KeyRing:
        """Every active key, newest first."""
        ...


class Cluster(Protocol):
    """What the pipeline reads from the cluster before applying; `name` is identity.name."""

    def inventory(self, name: str) -> applyplan.Inventory:
        """Every object the last successful pass applied (empty before the first)."""
        ...

    def stored_commit(self, name: str) -> str | None:
        """The last applied commit recorded in the cluster's status, if any (never trusted)."""
        ...

    def namespaced(self, group: str, kind: str) -> bool | None:
        """Whether the cluster serves `kind` of `group` namespaced; None when it does not know."""
        ...


class Applier(Protocol):
    """Executes a plan (server-side apply, then prune) and says what happened to each object."""

    def __call__(self, plan: applyplan.ApplyPlan, *, dry_run: bool) -> changeset.ChangeSet: ...


@dataclass(frozen=True)
class Ports:
    """Everything a pass needs from outside, built once by the entry point."""

    source: Source
    trust: verify.Trust
    commit_policy: commitpolicy.CommitPolicy | None
    keys: Keys
    cluster: Cluster
    apply: Applier
    secrets: decrypt.OpenedCache
