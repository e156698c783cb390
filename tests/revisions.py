"""Verified revisions and settings for unit tests of the stages after verify (plain values)."""

from __future__ import annotations

from typing import Any

from reconciler import config, verify


def verified(commit: str = "abc123", git_dir: str = "") -> verify.VerifiedRevision:
    """A `VerifiedRevision` as verify would return it for `commit` (no signers recorded)."""
    return verify.VerifiedRevision(
        git_dir=git_dir, commit=commit, since=None, mode=verify.Mode.ALL, signers=()
    )


def settings(
    paths: tuple[str, ...] = (".",), anchor: str = "0" * 40, **apply: Any
) -> config.ReconcilerConfig:
    """A configuration as `config.load` would build it, with `apply` settings overridden."""
    return config.ReconcilerConfig(
        source=config.SourceConfig(url="file:///nowhere", paths=paths),
        trust=config.TrustConfig(anchor=anchor),
        apply=config.ApplyConfig(**apply),
    )
