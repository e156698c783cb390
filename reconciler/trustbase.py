"""Where verification starts, and what the commit stored in the cluster may (not) do about it.

Owns the trust-base rule. The range a pass verifies is (base, tip] where the base is
* the configured trust anchor on the first pass of a process: (anchor, tip] is verified whole;
* the commit this process applied last, on later passes (it verified that commit itself).
The last applied commit stored in the cluster's status never sets the base: anyone who could
write it could otherwise skip verification of what comes after it. It is only checked, after
verify, against the verified history:
* stored == tip, or an ancestor of the tip that descends from the anchor: fine;
* stored descends from the anchor but is not an ancestor of the tip: the branch was rewritten
  under applied history (force-push) and the pass is refused (`StoredForcePush`, Stalled);
* stored absent from the history, malformed, or not a descendant of the anchor: ignored, and
  reported as a warning that status shows.
Must not fetch, verify signatures or talk to the cluster (the stored value is handed in).
"""

from __future__ import annotations

import re

import pygit2

from reconciler import config, errors, gitsource, verify

_SHA = re.compile(r"[0-9a-f]{40}")


class StoredForcePush(errors.Stalled):
    """The commit last applied (as stored) descends from the anchor but the tip dropped it."""


class AnchorNotInHistory(errors.Stalled):
    """The configured trust anchor is not an ancestor of (or equal to) the branch tip."""


def base(trust: config.TrustConfig, last_applied: str | None) -> str:
    """The commit the verified range starts after: this process's last apply, else the anchor."""
    return last_applied if last_applied is not None else trust.anchor


def check_anchor(checkout: gitsource.Checkout, anchor: str) -> None:
    """Refuse a tip that does not descend from the anchor, with a message saying so."""
    repo = pygit2.Repository(str(checkout.git_dir))
    checkout_tip = checkout.tip_commit
    if anchor == checkout_tip:
        return
    if not _present(repo, anchor) or not repo.descendant_of(checkout_tip, anchor):
        raise AnchorNotInHistory(
            f"tip {checkout_tip} does not descend from the trust anchor {anchor}: either the"
            " branch was rewritten below the anchor or trust.anchor names the wrong commit"
        )


def check_stored(
    verified: verify.VerifiedRevision, anchor: str, stored: str | None
) -> tuple[str, ...]:
    """Warnings about the stored commit (empty when it is consistent), or `StoredForcePush`."""
    if stored is None:
        return ()
    if not _SHA.fullmatch(stored):
        return (f"ignored the stored last-applied commit: {stored[:64]!r} is not a commit id",)
    try:
        return _check_stored(pygit2.Repository(verified.git_dir), verified.commit, anchor, stored)
    except pygit2.GitError:
        # History too incomplete to relate the commits: the stored value cannot be judged, so
        # it is ignored like any other it cannot vouch for (it never shortened the range).
        return (f"ignored the stored last-applied commit {stored}: its history is incomplete",)


def _check_stored(repo: pygit2.Repository, tip: str, anchor: str, stored: str) -> tuple[str, ...]:
    if not _present(repo, stored):
        return (f"ignored the stored last-applied commit {stored}: not in the branch's history",)
    if stored != anchor and not repo.descendant_of(stored, anchor):
        return (
            f"ignored the stored last-applied commit {stored}: it does not descend from the"
            f" trust anchor {anchor}",
        )
    if stored != tip and not repo.descendant_of(tip, stored):
        raise StoredForcePush(
            f"tip {tip} does not descend from the last applied commit {stored} (force-push?):"
            " history that was applied has been rewritten; nothing is applied"
        )
    return ()


def _present(repo: pygit2.Repository, sha: str) -> bool:
    try:
        return isinstance(repo.get(sha), pygit2.Commit)
    except ValueError:
        return False
