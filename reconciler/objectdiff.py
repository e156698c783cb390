"""The dry run's per-object diff: live object against the server's dry-run result, as YAML.

Owns masking and rendering only. Every value under a Secret's `data` and `stringData` is
replaced by `***` on both sides *before* anything is compared as text or rendered, and so is
the `kubectl.kubernetes.io/last-applied-configuration` annotation of a Secret (client-side
`kubectl apply` stores the whole Secret, values included, in it). A value that differs shows as
`*** (changed)` on the new side: the diff says that a key changed, never what it holds.
Server-owned noise (managedFields, resourceVersion, generation, uid, creationTimestamp) is
stripped. Must not do I/O.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler import changeset, objectref

MASK = "***"
CHANGED_MASK = "*** (changed)"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SERVER_FIELDS = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


@dataclass(frozen=True)
class ObjectDiff:
    """One object's would-be change: the action and a unified diff (empty when unchanged)."""

    ref: objectref.ObjectRef
    action: changeset.Action
    diff: str
    detail: str = ""


def compare(
    ref: objectref.ObjectRef,
    live: Mapping[str, Any] | None,
    result: Mapping[str, Any] | None,
    *,
    created: bool,
) -> ObjectDiff:
    """The diff from `live` (None: absent) to `result` (None: deleted)."""
    before = _cleaned(live)
    after = _cleaned(result)
    if _is_secret(ref):
        before, after = _masked(before, None), _masked(after, before_values(live))
    if result is None:
        action = changeset.Action.DELETED
    elif created or live is None:
        action = changeset.Action.CREATED
    elif before == after:
        action = changeset.Action.UNCHANGED
    else:
        action = changeset.Action.CONFIGURED
    name = ref.display()
    text = "".join(
        difflib.unified_diff(
            _yaml(before).splitlines(keepends=True),
            _yaml(after).splitlines(keepends=True),
            fromfile=f"live: {name}",
            tofile=f"git: {name}",
        )
    )
    return ObjectDiff(ref, action, text)


def changes_of(diffs: tuple[ObjectDiff, ...]) -> changeset.ChangeSet:
    """The ChangeSet a dry run reports, from its diffs."""
    return changeset.ChangeSet(
        tuple(changeset.Change(d.ref, d.action, "dry-run", d.detail) for d in diffs)
    )


def before_values(obj: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A Secret's raw `data` and `stringData` maps, only to tell changed values from equal ones."""
    if obj is None:
        return {}
    return {
        section: dict(obj[section])
        for section in ("data", "stringData")
        if isinstance(obj.get(section), Mapping)
    }


def _is_secret(ref: objectref.ObjectRef) -> bool:
    return ref.group == "" and ref.kind == "Secret"


def _cleaned(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    cleaned = copy.deepcopy(dict(obj))
    meta = cleaned.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_FIELDS:
            meta.pop(key, None)
    return cleaned


def _masked(
    obj: dict[str, Any] | None, compared_with: dict[str, dict[str, Any]] | None
) -> dict[str, Any] | None:
    if obj is None:
        return None
    for section in ("data", "stringData"):
        values = obj.get(section)
        if not isinstance(values, dict):
            continue
        old = (compared_with or {}).get("data", {}) if section == "data" else {}
        obj[section] = {
            key: CHANGED_MASK if compared_with and key in old and old[key] != value else MASK
            for key, value in values.items()
        }
    annotations = (obj.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        annotations[LAST_APPLIED] = MASK
    return obj


def _yaml(obj: dict[str, Any] | None) -> str:
    return "" if obj is None else yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)
