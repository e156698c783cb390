"""What the API server serves: aggregated discovery documents parsed into `Resource`s.

Owns turning the two documents of aggregated discovery (`/api` and `/apis`, format
`apidiscovery.k8s.io/v2`, GA since Kubernetes 1.30) into a lookup from (group, kind) to the
resource's plural, scope and served versions. Two requests describe the whole cluster, where
the legacy scheme needs one per group version; that is part of the no-op budget. Must not do
I/O: the cluster adapter fetches the documents and refreshes them after CRDs change.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler import cluster_errors

ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
DISCOVERY_KIND = "APIGroupDiscoveryList"


class Unsupported(ValueError):
    """The API server answered with something other than an aggregated discovery document."""


@dataclass(frozen=True)
class Resource:
    """One kind as served: `versions` in the server's order of preference."""

    group: str
    kind: str
    plural: str
    namespaced: bool
    versions: tuple[str, ...]

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    def path(self, namespace: str = "", name: str = "", *, version: str | None = None) -> str:
        """The URL path of the collection (no name) or of one object."""
        served = version or self.preferred_version
        base = f"/apis/{self.group}/{served}" if self.group else f"/api/{served}"
        if self.namespaced and namespace:
            base += f"/namespaces/{_segment(namespace)}"
        base += f"/{self.plural}"
        return f"{base}/{_segment(name)}" if name else base


@dataclass(frozen=True)
class Resources:
    """Every served kind, by (group, kind); `stale_groups` have a version whose server is down.

    A Stale group version lists no kinds at all, so a kind missing from `by_kind` in one of
    those groups is unknown, not absent: the caller must not read it as "gone".
    """

    by_kind: Mapping[tuple[str, str], Resource]
    stale_groups: frozenset[str] = frozenset()

    def get(self, group: str, kind: str) -> Resource | None:
        return self.by_kind.get((group, kind))


def parse(documents: Iterable[Mapping[str, Any]]) -> Resources:
    """Resources from the `/api` and `/apis` documents; raises `Unsupported` on another shape."""
    found: dict[tuple[str, str], Resource] = {}
    stale: set[str] = set()
    for document in documents:
        if document.get("kind") != DISCOVERY_KIND:
            raise Unsupported(
                f"the API server sent {document.get('kind')!r}, not {DISCOVERY_KIND} "
                "(aggregated discovery needs Kubernetes 1.30 or later)"
            )
        for group_doc in document.get("items") or ():
            group = str((group_doc.get("metadata") or {}).get("name") or "")
            for version_doc in group_doc.get("versions") or ():
                if version_doc.get("freshness") == "Stale":
                    stale.add(group)
                _add_version(found, group, version_doc)
    return Resources(found, frozenset(stale))


def _add_version(
    found: dict[tuple[str, str], Resource], group: str, version_doc: Mapping[str, Any]
) -> None:
    version = str(version_doc.get("version") or "")
    # A group version whose aggregated API server is down is reported "Stale": its kinds
    # are still listed but requests would fail, so treat them as not served.
    if not version or version_doc.get("freshness") == "Stale":
        return
    for res in version_doc.get("resources") or ():
        kind = str((res.get("responseKind") or {}).get("kind") or "")
        plural = str(res.get("resource") or "")
        if not kind or not plural:
            continue
        key = (group, kind)
        known = found.get(key)
        if known is None:
            found[key] = Resource(group, kind, plural, res.get("scope") == "Namespaced", (version,))
        elif version not in known.versions:
            found[key] = Resource(
                group, kind, known.plural, known.namespaced, (*known.versions, version)
            )


def _segment(text: str) -> str:
    # `.` and `..` survive quoting and are resolved as dot segments on the way to the API
    # server: `.../configmaps/..` is the Namespace, `.../configmaps/.` the collection. A
    # request for such a "name" would read, apply or delete another object than it names.
    if text in (".", ".."):
        raise cluster_errors.Rejected(f"{text!r} is not an object name (a URL dot segment)")
    return urllib.parse.quote(text, safe="")
