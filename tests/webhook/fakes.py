"""Fakes of the webhook's own ports for unit tests (no library internals are patched)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook import decision as decision_mod
from webhook import parents, policy


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


@dataclass
class FakeParents:
    """A ParentLookup answering fixed metadata, or failing."""

    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    fail: bool = False
    objects: dict[tuple[str, str, str], parents.ParentMeta | None] = field(default_factory=dict)
    """Answers by (resource, namespace, name), None for a missing object; else the labels."""
    holding: frozenset[str] = frozenset()
    """Resources of which any_labelled finds one."""
    asked: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    listed: list[tuple[str, str, str]] = field(default_factory=list)

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> parents.ParentMeta | None:
        self.asked.append((group, version, resource, namespace, name))
        if self.fail:
            raise parents.LookupFailed(f"cannot read {resource} {namespace}/{name}: HTTP 403")
        if (resource, namespace, name) in self.objects:
            return self.objects[(resource, namespace, name)]
        return parents.ParentMeta(labels=self.labels, annotations=self.annotations)

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        self.listed.append((resource, namespace, selector))
        if self.fail:
            raise parents.LookupFailed(f"cannot list {resource} in {namespace}: HTTP 403")
        return resource in self.holding
