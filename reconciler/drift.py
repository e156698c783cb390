"""Drift repair: a managed object changed or deleted outside Git is re-applied at once.

Owns deciding, for each watch event, whether GitWarden must write, and the one-object write.
The desired state is the last successful pass's plan (`track`); per object it keeps the planned
object, the resourceVersion our last write (or a pass) left, and the digest of the values at
the fields we own in that state (`managedfields.owned_digest`, learnt from the watch event of
our own write or from the list). An event is then decided without a request:
* an object we do not track, a BOOKMARK, or our own write (its resourceVersion): nothing;
* the same owned-fields digest as ours (a controller's status write, a new field someone
  else added): nothing;
* another digest (a field we set changed, was taken over or removed): re-apply with force;
* DELETED (deleted, or left the label selector: the watch cannot tell): read its metadata,
  then re-apply (create it again, or put the label back).
When no digest of ours is known yet (right after a pass wrote the object, before its event)
the re-apply decides: a server-side no-op writes nothing and is not reported as a repair.

A `Repair` names the object and the field managers that changed it, from managedFields, never
values. Secrets: a Secret's body exists only inside `apply.apply_object` for its request; the
names reported come from the Secret's keys, never its data. Called on the loop's one worker
thread (no locking); errors are the cluster adapter's (Transient / Stalled) for the loop.
Must not import the kubernetes client or decide what Git wants (plan did).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler import (
    apply,
    applyplan,
    changeset,
    cluster,
    config,
    discovery,
    errors,
    managedfields,
    objectref,
    watches,
)

if TYPE_CHECKING:  # only the type: the loop hands us a pass's outcome
    from reconciler import pipeline

CHANGED, DELETED, UNLABELLED = "changed", "deleted", "unlabelled"


def selector(settings: config.ApplyConfig) -> str:
    """The label selector of every managed object: what the watches follow."""
    return f"{settings.managed_label_key}={settings.managed_label_value}"


@dataclass(frozen=True)
class Repair:
    """One drift repaired: the object, who changed it (field managers), what the apply did."""

    ref: objectref.ObjectRef
    managers: tuple[str, ...]
    action: changeset.Action
    cause: str = CHANGED

    def message(self) -> str:
        """For the Event and the log: names only, never a value."""
        what = self.ref.display()
        head = {
            DELETED: f"{what} was deleted",
            UNLABELLED: f"{what} lost its managed label",
        }.get(self.cause, f"{what} was changed outside Git")
        if self.managers:
            head += f" by field manager {', '.join(self.managers)}"
        elif self.cause != DELETED:
            head += (
                " (no other field manager owns a field GitWarden sets: the change removed"
                " fields, or was applied under GitWarden's own field manager name)"
            )
        return f"drift repaired: {head}; re-applied from Git ({self.action.value})"


class _Tracked:
    """What is known about one managed object between events (small: 10,000 are kept)."""

    __slots__ = ("owned", "planned", "version")

    def __init__(self, planned: applyplan.PlannedObject, version: str, owned: bytes | None):
        self.planned = planned
        self.version = version
        self.owned = owned


class Repairer:
    """Re-applies drifted managed objects of one Sync (`name`) from its last applied plan."""

    def __init__(self, target: cluster.Cluster, settings: config.ApplyConfig, name: str) -> None:
        self._target = target
        self._settings = settings
        self._name = name
        self._tracked: dict[objectref.ObjectRef, _Tracked] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def settings(self) -> config.ApplyConfig:
        return self._settings

    def __len__(self) -> int:
        return len(self._tracked)

    def track(self, applied: pipeline.Applied) -> None:
        """The desired state after a successful pass: its plan, and the versions it left."""
        versions = {
            c.ref: c.resource_version
            for c in applied.changes.changes
            if c.resource_version and c.action is not changeset.Action.DELETED
        }
        tracked: dict[objectref.ObjectRef, _Tracked] = {}
        for obj in applied.plan.objects():
            version = versions.get(obj.ref)
            if not version:
                continue
            old = self._tracked.get(obj.ref)
            owned = old.owned if old is not None and old.version == version else None
            tracked[obj.ref] = _Tracked(obj, version, owned)
        self._tracked = tracked

    def forget(self, changes: changeset.ChangeSet) -> None:
        """After a failed pass: stop repairing the objects it wrote or pruned.

        Their tracked desired state is the previous revision's; repairing them now would
        undo the newer revision, or bring back what it pruned. The next successful pass
        tracks them again.
        """
        for change in changes.changes:
            self._tracked.pop(change.ref, None)

    def kinds(self) -> tuple[discovery.Resource, ...]:
        """The served kinds of the tracked objects (what the watches must follow)."""
        found: dict[tuple[str, str], discovery.Resource] = {}
        for ref in self._tracked:
            key = (ref.group, ref.kind)
            if key in found:
                continue
            try:
                found[key] = self._target.resource(*key)
            except errors.ReconcileError:
                continue  # not served, or discovery away: the next pass reports why
        return tuple(found[k] for k in sorted(found))

    def handle(self, event: watches.Event) -> Repair | None:
        """Repair the object of `event` if it drifted; None when there was nothing to do."""
        entry = self._tracked.get(event.ref)
        if entry is None or event.type == "BOOKMARK":
            return None
        if event.type == "DELETED":
            return self._gone(entry)
        if event.resource_version == entry.version:
            if entry.owned is None:  # our own write: what our fields look like after it
                entry.owned = event.owned
            return None
        if entry.owned is not None and event.owned == entry.owned:
            entry.version = event.resource_version  # someone else's write left ours alone
            return None
        return self._reapply(entry, event)

    def _reapply(self, entry: _Tracked, event: watches.Event) -> Repair | None:
        ours, known = entry.version, entry.owned
        change = self._write(entry, event.resource_version)
        if change.resource_version == event.resource_version:
            entry.owned = event.owned  # nothing written: the fields were as Git has them
            return None
        if change.resource_version == ours:
            entry.owned = known  # nothing written: the event was older than our last write
            return None
        managers = managedfields.changers(
            event.managers, self._target.field_manager, _shape(entry.planned), event.our_time
        )
        return Repair(event.ref, managers, change.action)

    def _gone(self, entry: _Tracked) -> Repair | None:
        ref = entry.planned.ref
        live = self._target.read_metadata(ref)
        if live is None:
            return Repair(ref, (), self._write(entry, None).action, DELETED)
        manager = self._target.field_manager
        labels = ((live.get("metadata") or {}).get("labels")) or {}
        unlabelled = labels.get(self._settings.managed_label_key) != (
            self._settings.managed_label_value
        )
        managers = managedfields.changers(
            managedfields.others(live, manager),
            manager,
            _shape(entry.planned),
            managedfields.our_time(live, manager),
        )
        version = str((live.get("metadata") or {}).get("resourceVersion") or "")
        change = self._write(entry, version)
        if change.action is changeset.Action.UNCHANGED:
            return None  # still there and still as Git has it (a relist's stale DELETED)
        return Repair(ref, managers, change.action, UNLABELLED if unlabelled else CHANGED)

    def _write(self, entry: _Tracked, previous: str | None) -> changeset.Change:
        entry.owned = None  # unknown until the event of this write (or a no-op) says
        change = apply.apply_object(entry.planned, self._target, previous_version=previous)
        entry.version = change.resource_version
        return change


def _shape(obj: applyplan.PlannedObject) -> Mapping[str, Any]:
    """The desired object's field names, for naming managers; a Secret's keys, not values."""
    if obj.secret is None:
        return obj.body or {}
    secret = obj.secret
    shape: dict[str, Any] = {"metadata": secret.metadata, "data": dict.fromkeys(secret.data)}
    if secret.type:
        shape["type"] = secret.type
    if secret.immutable is not None:
        shape["immutable"] = secret.immutable
    return shape
