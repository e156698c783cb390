"""Verified revisions for unit tests of the stages after verify (plain values, no repository)."""

from __future__ import annotations

from reconciler import verify


def verified(commit: str = "abc123", git_dir: str = "") -> verify.VerifiedRevision:
    """A `VerifiedRevision` as verify would return it for `commit` (no signers recorded)."""
    return verify.VerifiedRevision(
        git_dir=git_dir, commit=commit, since=None, mode=verify.Mode.ALL, signers=()
    )
