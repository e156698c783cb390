"""The value an admission decision is: allow or deny, what to tell the user and the audit log.

Pure data shared by the policy engine port (which produces it) and the wire format (which
answers with it); it imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    """What to answer the API server: allow or deny, and what to tell the user and the audit log."""

    allowed: bool
    reason: str
    mode: str = "enforce"
    message: str = ""
    warnings: tuple[str, ...] = ()
    audit: Mapping[str, str] = field(default_factory=dict)
    cached: bool = False
    """Answered from the decision cache (`webhook.decisioncache`), not by asking OPA again."""
