"""Fakes of the pipeline's own ports (reconciler.ports), for unit tests of the straight line."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from reconciler import applyplan, changeset, commitpolicy, decrypt, gitsource, ports
from reconciler.sealed import keys
from tests.harness import signedrepo


@dataclasses.dataclass
class Source:
    """The repository's `main` as the fetch stage hands it on (an unknown since unresolved)."""

    repo: signedrepo.SignedRepo
    asked: list[str] = dataclasses.field(default_factory=list)

    def fetch(self, since: str) -> gitsource.Checkout:
        self.asked.append(since)
        known = gitsource.has_commit(self.repo.repo, since)
        checkout = self.repo.checkout(since if known else None)
        return dataclasses.replace(checkout, since=since)


@dataclasses.dataclass
class Keys:
    key_ring: keys.KeyRing

    def ring(self) -> keys.KeyRing:
        return self.key_ring


@dataclasses.dataclass
class Cluster:
    """An inventory, a stored commit (attacker-writable in the tests) and a discovery table."""

    stored: str | None = None
    previous: applyplan.Inventory = dataclasses.field(default_factory=applyplan.Inventory)
    served: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)

    def inventory(self, name: str) -> applyplan.Inventory:
        return self.previous

    def stored_commit(self, name: str) -> str | None:
        return self.stored

    def namespaced(self, group: str, kind: str) -> bool | None:
        return self.served.get((group, kind))


@dataclasses.dataclass
class Applier:
    """Records each plan and reports every object created, every pruned one deleted."""

    plans: list[tuple[applyplan.ApplyPlan, bool]] = dataclasses.field(default_factory=list)

    def __call__(self, plan: applyplan.ApplyPlan, *, dry_run: bool) -> changeset.ChangeSet:
        self.plans.append((plan, dry_run))
        made = [
            changeset.Change(o.ref, changeset.Action.CREATED, s.stage.value)
            for s in plan.stages
            for o in s.objects
        ]
        gone = [changeset.Change(r, changeset.Action.DELETED, "prune") for r in plan.prune]
        return changeset.ChangeSet(tuple(made + gone))


@dataclasses.dataclass
class Policy:
    """A commit policy that records what it saw and denies the shas it is told to."""

    deny: dict[str, str] = dataclasses.field(default_factory=dict)
    seen: list[str] = dataclasses.field(default_factory=list)

    def evaluate(
        self, commits: Sequence[commitpolicy.PolicyCommit]
    ) -> tuple[commitpolicy.Denial, ...]:
        self.seen.extend(c.sha for c in commits)
        return tuple(
            commitpolicy.Denial(c.sha, self.deny[c.sha]) for c in commits if c.sha in self.deny
        )


def ports_for(
    repo: signedrepo.SignedRepo,
    ring: keys.KeyRing,
    cluster: Cluster | None = None,
    policy: Policy | None = None,
    cache: decrypt.OpenedCache | None = None,
) -> tuple[ports.Ports, Applier]:
    applier = Applier()
    built = ports.Ports(
        source=Source(repo),
        trust=repo.trust,
        commit_policy=policy,
        keys=Keys(ring),
        cluster=cluster or Cluster(),
        apply=applier,
        secrets=cache if cache is not None else decrypt.OpenedCache(),
    )
    return built, applier
