"""The root of the reconciler's error hierarchy and the two things the loop can do about an error.

Owns `ReconcileError` and its only two direct bases, `Transient` and `Stalled`. Every error a
stage or adapter raises derives from exactly one of them, so the loop has one `match` and never
guesses (a test walks every subclass). Each stage defines its own subclasses next to its code.
A `Stalled` error also says where its cause lies (`in_cluster`, read through the chain of
causes by `in_cluster`): in Git, only a new revision or configuration can help; in the cluster
(RBAC, a missing kind or namespace, an admission denial), an administrator's fix can, so the
loop retries it on a slow, capped backoff. Must not import any stage or third-party library.
"""

from __future__ import annotations


class ReconcileError(Exception):
    """A reconcile could not go on; the message names the object and the reason, never content."""


class Transient(ReconcileError):
    """Worth retrying with backoff: the network, the API server (409/429/5xx), OPA briefly away.

    The same revision is tried again; nothing about it was judged bad.
    """


class Stalled(ReconcileError):
    """Retrying cannot help: wait for a new revision or a configuration change.

    A bad signature, a manifest that does not parse, a SealedSecret that will not open, an
    immutable field that may not be recreated, a prune that would delete everything.
    """

    cause_in_cluster: bool = False
    """True for a class whose cause is the cluster's state, not the revision: RBAC forbids a
    request, a kind or namespace is missing, an admission webhook denies. Such a stall ends
    when an administrator fixes the cluster, with no new commit: the loop retries it on a
    capped backoff (`loop.Schedule`). Everything else waits for a new revision or config."""


def in_cluster(error: BaseException) -> bool:
    """Whether a Stalled `error`, or a Stalled error it wraps (`raise ... from`), is caused by
    the cluster. A wrapper (apply's `ApplyStalled`) keeps its cause in `__cause__`; any Stalled
    error down the chain that says so decides. Bounded: a cycle ends the walk."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Stalled) and current.cause_in_cluster:
            return True
        current = current.__cause__
    return False
