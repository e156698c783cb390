"""What server-side apply's `managedFields` say about one live object, for drift repair.

Owns three pure readings of an object's `metadata.managedFields`:
* `owned_digest`: a digest of the object projected onto the field set that GitWarden's field
  manager owns through Apply (its `fieldsV1`), paths and values together. Server-side apply
  moves a field away from us when anyone else changes its value, and drops it when anyone
  removes it; a same-named Apply changes values under our own set. Each changes this digest;
  a controller's status write, another manager's new field, or a co-owner writing the value we
  already hold do not. So "drifted" is one digest comparison with the digest of the state our
  apply produced, with no request and without keeping the object.
* `others`: every entry that is not our Apply entry (manager, operation, subresource, time and
  its field set: keys, never values), small enough to ride on a watch event.
* `changers`: which of those own a field of the desired body (and wrote since we did), the
  names a drift repair reports.

A Secret's values go into the digest (blake2b, 16 bytes) and nowhere else; the digest is never
printed. Must not do I/O or import anything but the standard library and our values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

APPLY = "Apply"
_ABSENT: list[int] = [0]  # the projection of a field the object does not have


@dataclass(frozen=True)
class Entry:
    """One managedFields entry other than ours: who, how, when, and which fields (keys only)."""

    manager: str
    operation: str
    subresource: str
    time: str
    fields: Mapping[str, Any]

    def label(self, ours: str) -> str:
        """The manager's name; our own name used by another operation says which."""
        if self.manager == ours:
            return f"{self.manager} ({self.operation or 'unknown operation'})"
        return self.manager or "(unnamed manager)"


def entries(obj: Any) -> list[Mapping[str, Any]]:
    """The managedFields entries of a JSON object (empty when it has none)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    found = meta.get("managedFields") if isinstance(meta, Mapping) else None
    return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []


def is_ours(entry: Mapping[str, Any], field_manager: str) -> bool:
    """Our apply's entry: our manager name, operation Apply, on the object itself."""
    return (
        entry.get("manager") == field_manager
        and entry.get("operation") == APPLY
        and not entry.get("subresource")
    )


def our_time(obj: Any, field_manager: str) -> str:
    """When our Apply entry last changed ("" without one)."""
    for entry in entries(obj):
        if is_ours(entry, field_manager):
            return str(entry.get("time") or "")
    return ""


def others(obj: Any, field_manager: str) -> tuple[Entry, ...]:
    """Every entry but our Apply entry."""
    return tuple(
        Entry(
            manager=str(e.get("manager") or ""),
            operation=str(e.get("operation") or ""),
            subresource=str(e.get("subresource") or ""),
            time=str(e.get("time") or ""),
            fields=_mapping(e.get("fieldsV1")),
        )
        for e in entries(obj)
        if not is_ours(e, field_manager)
    )


def owned_digest(obj: Any, field_manager: str) -> bytes:
    """The digest of `obj` projected onto the fields our Apply entry owns (with their paths)."""
    fields: Mapping[str, Any] | None = None
    for entry in entries(obj):
        if is_ours(entry, field_manager):
            fields = _mapping(entry.get("fieldsV1"))
            break
    projected = None if fields is None else project(fields, obj)
    text = json.dumps(projected, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    del projected, text  # a Secret's values: no longer than the hash needs them
    return digest


def project(fields: Mapping[str, Any], value: Any) -> Any:
    """`value` seen through a `fieldsV1` set: a tree of the set's keys, leaves with values.

    `f:name` is a map field, `k:{...}` a list item found by its key fields, `v:...` a set
    member, `i:N` a list item by index, `.` the node itself. A leaf is `[1, value]` when the
    object has it and `[0]` when not, so "absent" and any value never collide.
    """
    out: dict[str, Any] = {}
    for key, child in fields.items():
        if key == ".":
            continue
        found, item = _child(key, value)
        sub = _mapping(child)
        leaf = not sub or set(sub) == {"."}
        if not found:
            out[key] = _ABSENT
        elif leaf:
            out[key] = [1, item]
        else:
            out[key] = project(sub, item)
    return out


def changers(
    found: Iterable[Entry], field_manager: str, shape: Mapping[str, Any], since: str = ""
) -> tuple[str, ...]:
    """Who changed the desired fields: entries owning one of `shape`'s fields, written at or
    after `since` (our entry's time; "" when unknown keeps every owner), by name, sorted."""
    names = {
        e.label(field_manager)
        for e in found
        if (not since or not e.time or e.time >= since) and touches(e.fields, shape)
    }
    return tuple(sorted(names))


def touches(fields: Mapping[str, Any], shape: Any) -> bool:
    """Whether a field set owns any field the desired `shape` declares.

    Inside a list the shape declares, any item counts: which item a key means depends on the
    list's schema, and naming a manager that edited a list we set is what a person needs.
    """
    if not isinstance(shape, Mapping):
        return False
    for key, child in fields.items():
        if not key.startswith("f:") or key[2:] not in shape:
            continue
        declared = shape[key[2:]]
        sub = _mapping(child)
        if not sub or set(sub) == {"."} or isinstance(declared, list | tuple):
            return True
        if touches(sub, declared):
            return True
    return False


def _child(key: str, value: Any) -> tuple[bool, Any]:
    """Whether `value` has the child `key` names, and that child."""
    kind, _, rest = key.partition(":")
    if kind == "f":
        found = isinstance(value, Mapping) and rest in value
        return found, value[rest] if found else None
    if not isinstance(value, list):
        return False, None
    if kind == "i":
        index = int(rest) if rest.isdigit() else -1
        return (True, value[index]) if 0 <= index < len(value) else (False, None)
    wanted = _json(rest)
    if kind == "v":
        return (wanted in value), wanted
    items = value if kind == "k" and isinstance(wanted, Mapping) else []
    for item in items:
        if isinstance(item, Mapping) and all(item.get(k) == v for k, v in wanted.items()):
            return True, item
    return False, None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _ABSENT  # matches no item: a key the server would never write


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
