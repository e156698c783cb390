"""The root of the reconciler's error hierarchy.

Owns only `ReconcileError`; each stage defines its own subclasses next to its code and the loop
classifies them. Must not import any stage or third-party library.
"""

from __future__ import annotations


class ReconcileError(Exception):
    """A reconcile could not go on; the message names the object and the reason, never content."""
