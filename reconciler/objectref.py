"""`ObjectRef`: how the reconciler names one Kubernetes object, everywhere.

Owns the identity of an object (API group, kind, namespace, name: the version is not part of
it, as in server-side apply) and its one text form `group/Kind/namespace/name`, which the
inventory stores, the ChangeSet prints and errors quote. Must not import any stage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One object's identity; `namespace` is "" for cluster-scoped kinds, `group` "" for core."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.group}/{self.kind}/{self.namespace}/{self.name}"

    @staticmethod
    def parse(text: str) -> ObjectRef:
        """The inverse of `str`; raises ValueError on anything else."""
        parts = text.split("/")
        if len(parts) != 4 or not parts[1] or not parts[3]:
            raise ValueError(f"not an object reference (group/Kind/namespace/name): {text!r}")
        return ObjectRef(*parts)

    @property
    def group_kind(self) -> str:
        """`Kind.group` as ApplySet's contains-group-kinds annotation spells it."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def display(self) -> str:
        """`Kind ns/name` or `Kind name`, for people."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.group_kind} {where}"
