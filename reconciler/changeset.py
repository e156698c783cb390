"""The ChangeSet: what one apply (or dry run) did to each object, and its one summary.

Owns `Action`, `Change` and `ChangeSet`. Status, Events, logs and the CLI all print
`ChangeSet.summary()`, so they never disagree. A Change names the object and, for a skip, why;
it never carries object contents (a Secret's value must not reach a summary). Must not import
any stage.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from reconciler import objectref


class Action(enum.Enum):
    """What happened to one object."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Change:
    """One object's outcome; `stage` is the plan stage's name, `detail` says why for a skip.

    `resource_version` is the object's resourceVersion after the pass (applied or found
    unchanged), which the inventory records; empty for deletes, skips and dry runs' guesses.
    """

    ref: objectref.ObjectRef
    action: Action
    stage: str
    detail: str = ""
    resource_version: str = ""

    def __str__(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.ref.display()} {self.action.value}{tail}"


@dataclass(frozen=True)
class ChangeSet:
    """Every Change of a pass, in the order they were made."""

    changes: tuple[Change, ...] = ()

    def counts(self) -> dict[Action, int]:
        """How many objects each action touched (actions with none are left out)."""
        counted = Counter(change.action for change in self.changes)
        return {action: counted[action] for action in Action if counted[action]}

    def summary(self) -> str:
        """`3 created, 1 configured, 996 unchanged`, or `no objects` for an empty set."""
        counts = self.counts()
        if not counts:
            return "no objects"
        return ", ".join(f"{n} {action.value}" for action, n in counts.items())

    @property
    def changed(self) -> bool:
        """Whether anything was created, configured or deleted."""
        return any(
            c.action in (Action.CREATED, Action.CONFIGURED, Action.DELETED) for c in self.changes
        )

    def __add__(self, other: ChangeSet) -> ChangeSet:
        return ChangeSet(self.changes + other.changes)
