"""The root of the reconciler's error hierarchy and the two things the loop can do about an error.

Owns `ReconcileError` and its only two direct bases, `Transient` and `Stalled`. Every error a
stage or adapter raises derives from exactly one of them, so the loop has one `match` and never
guesses (a test walks every subclass). Each stage defines its own subclasses next to its code.
Must not import any stage or third-party library.
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
