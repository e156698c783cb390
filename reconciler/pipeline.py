"""The reconciler on one page: fetch → verify → load → decrypt → plan → apply.

Owns only the order of the stages and what each hands the next (`Checkout → VerifiedRevision →
Manifests → DecryptedManifests → ApplyPlan → ChangeSet`), each a frozen value that only the next
stage accepts. It does no I/O of its own (the ports do), no logging, no retries and no status:
the loop (or `gitwarden reconcile --once`) turns the outcome or the error (`Transient` /
`Stalled`) into status, Events, metrics and the next schedule.
`reconcile` is `prepare` (everything up to the plan; changes nothing) then `execute` (apply);
an entry point that must report a failed apply together with its plan calls the two itself.

Trust base (`reconciler.trustbase`): the first pass of a process verifies (anchor, tip]; a pass
after a successful one verifies (last applied, tip]. The commit stored in the cluster's status
never sets the range's base: it is only checked after verify (a force-push under it is refused;
one that is not a verified descendant of the anchor is ignored and reported in `warnings`).
Verification is always mode ALL (every commit) and always runs the commit policy when one is
configured.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from reconciler import (
    applyplan,
    changeset,
    config,
    decrypt,
    gitsource,
    load,
    manifests,
    plan,
    ports,
    trustbase,
    verify,
)

_LISTED_FAILURES = 5


class RevisionRefused(verify.VerificationFailed):
    """Verification failed; the message names the tip and each failed commit with its reason."""

    def __init__(self, message: str, failures: tuple[tuple[str, str], ...], tip: str) -> None:
        super().__init__(message, failures)
        self.tip = tip


@dataclass(frozen=True)
class Applied:
    """The outcome of one pass: what was verified, planned and done, and what to remember."""

    verified: verify.VerifiedRevision
    plan: applyplan.ApplyPlan
    changes: changeset.ChangeSet
    key_hints: manifests.KeyHints
    warnings: tuple[str, ...] = ()
    rsa_operations: int = 0

    @property
    def commit(self) -> str:
        return self.verified.commit


@dataclass(frozen=True)
class Planned:
    """Everything up to apply: the verified revision, its plan, and what to remember."""

    verified: verify.VerifiedRevision
    plan: applyplan.ApplyPlan
    key_hints: manifests.KeyHints
    warnings: tuple[str, ...]
    rsa_operations: int


def reconcile(
    io: ports.Ports,
    settings: config.ReconcilerConfig,
    last: Applied | None,
    now: datetime.datetime,
    *,
    dry_run: bool = False,
) -> Applied:
    """One pass, or `Transient` / `Stalled`: before apply nothing has changed; an error from
    apply carries the partial ChangeSet (`changes`)."""
    return execute(prepare(io, settings, last, now), io, dry_run=dry_run)


def prepare(
    io: ports.Ports,
    settings: config.ReconcilerConfig,
    last: Applied | None,
    now: datetime.datetime,
) -> Planned:
    """Fetch → verify → load → decrypt → plan; changes nothing anywhere."""
    name = settings.identity.name
    base = trustbase.base(settings.trust, last.commit if last is not None else None)
    checkout = io.source.fetch(since=base)
    if last is None:
        trustbase.check_anchor(checkout, settings.trust.anchor)
    verified = _verify_all(checkout, io, now)
    warnings = trustbase.check_stored(
        verified, settings.trust.anchor, io.cluster.stored_commit(name)
    )
    loaded = load.run(verified, settings, io.cluster.namespaced)
    hints = last.key_hints if last is not None else decrypt.NO_HINTS
    decrypted = decrypt.run(loaded, io.keys.ring(), hints, io.secrets)
    planned = plan.build(decrypted, io.cluster.inventory(name), settings)
    return Planned(verified, planned, decrypted.key_hints, warnings, decrypted.rsa_operations)


def execute(planned: Planned, io: ports.Ports, *, dry_run: bool) -> Applied:
    """The plan applied (and pruned); an entry point that reports a failed apply with its plan
    (for the inventory of what was applied before it stopped) calls `prepare`, then this."""
    changes = io.apply(planned.plan, dry_run=dry_run)
    return Applied(
        planned.verified,
        planned.plan,
        changes,
        planned.key_hints,
        planned.warnings,
        planned.rsa_operations,
    )


def _verify_all(
    checkout: gitsource.Checkout, io: ports.Ports, now: datetime.datetime
) -> verify.VerifiedRevision:
    """Every commit of the range (mode ALL), with the commit policy whenever one is set."""
    try:
        return verify.verify(checkout, io.trust, verify.Mode.ALL, io.commit_policy, now)
    except verify.ForcePushRefused:
        raise
    except verify.VerificationFailed as exc:
        raise _refused(checkout.tip_commit, exc) from exc


def _refused(tip: str, exc: verify.VerificationFailed) -> RevisionRefused:
    """The verify stage's error, with a message that status and the CLI can show as it is."""
    listed = "; ".join(f"{sha}: {why}" for sha, why in exc.failures[:_LISTED_FAILURES])
    more = len(exc.failures) - _LISTED_FAILURES
    tail = f"; and {more} more" if more > 0 else ""
    count = len(exc.failures)
    return RevisionRefused(
        f"revision {tip} refused: {count} commit(s) failed verification: {listed}{tail}",
        exc.failures,
        tip,
    )
