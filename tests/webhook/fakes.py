"""Fakes of the webhook's own ports for unit tests (no library internals are patched)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook import decision as decision_mod
from webhook import policy


@dataclass
class FakeEngine:
    """A DecisionEngine that records inputs and answers a fixed decision or raises."""

    decision: decision_mod.Decision = field(
        default_factory=lambda: decision_mod.Decision(
            allowed=False, reason="not-gitops", message="no"
        )
    )
    error: policy.EngineError | None = None
    is_ready: bool = True
    inputs: list[Mapping[str, Any]] = field(default_factory=list)

    def decide(self, policy_input: Mapping[str, Any]) -> decision_mod.Decision:
        self.inputs.append(policy_input)
        if self.error is not None:
            raise self.error
        return self.decision

    def ready(self) -> bool:
        return self.is_ready
