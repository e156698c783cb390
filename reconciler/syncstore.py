"""The Sync object in the cluster: the stored inventory and commit, status writes, the CRD.

Owns reading `syncs.gitwarden.dev/<name>` (the ApplySet parent), writing its metadata and
its status (server-side apply on the status subresource, as GitWarden's field manager, so
only the fields GitWarden renders are owned and each write replaces them all), and installing
the CRD shipped in the package (`reconciler/crds/sync.yaml`) when it is missing: the first
status write of a fresh cluster installs it, so `gitwarden reconcile --once` needs no set-up
step; `gitwarden status --install-crd` does it ahead of time. The webhook's configuration must
cover the Sync kind so that only the GitOps identity can write it (the stored commit and the
inventory steer pruning and shorten verification). Talks only through the cluster adapter;
rendering is `status.render`.
"""

from __future__ import annotations

import datetime
import importlib.resources
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import yaml

from reconciler import applyplan, cluster_errors, errors, objectref, status

if TYPE_CHECKING:
    from reconciler import cluster

CRD_NAME = f"{status.PLURAL}.{status.GROUP}"
CRD_REF = objectref.ObjectRef("apiextensions.k8s.io", "CustomResourceDefinition", "", CRD_NAME)
CRD_TIMEOUT = 60.0


class InventoryUnreadable(cluster_errors.ClusterError, errors.Stalled):
    """The stored inventory does not decode; prune cannot be decided safely.

    In the cluster: an administrator who deletes `status.inventory` ends the stall."""

    cause_in_cluster = True


def sync_path(name: str, subresource: str = "") -> str:
    """URL path of the Sync object `name` (cluster-scoped; needs no discovery)."""
    path = f"/apis/{status.GROUP}/{status.VERSION}/{status.PLURAL}/{name}"
    return f"{path}/{subresource}" if subresource else path


def read(target: cluster.Cluster, name: str) -> Mapping[str, Any] | None:
    """The Sync object, or None when it (or its CRD) does not exist."""
    try:
        body = target.request("GET", sync_path(name), what=f"read Sync {name}").body
    except cluster_errors.NotFound:
        return None
    return body if isinstance(body, dict) else None


def inventory(target: cluster.Cluster, name: str) -> applyplan.Inventory:
    """What the last pass recorded: its commit and its inventory (empty on a fresh cluster).

    An inventory that is there but does not decode is Stalled, not treated as empty: an empty
    inventory would silently stop pruning what GitWarden applied before.
    """
    found = read(target, name)
    state = found.get("status") if found else None
    try:
        return status.decode_inventory(state if isinstance(state, Mapping) else None)
    except ValueError as exc:
        raise InventoryUnreadable(
            f"Sync {name}: {exc}; delete its status.inventory to start over (nothing is "
            "pruned until the next successful pass records a new one)"
        ) from exc


def stored_commit(target: cluster.Cluster, name: str) -> str | None:
    """The last applied commit in the Sync status, as written (unverified: only a hint)."""
    found = read(target, name)
    state = found.get("status") if found else None
    commit = state.get("lastAppliedCommit") if isinstance(state, Mapping) else None
    return str(commit) if commit else None


def report(
    target: cluster.Cluster, name: str, outcome: status.Outcome, now: datetime.datetime
) -> dict[str, Any]:
    """Render `outcome` against the stored status and write it; returns the status written."""
    found = read(target, name)
    if found is None:
        ensure_crd(target)
    previous = found.get("status") if found else None
    settings = target.settings
    meta = status.parent_metadata(
        name,
        outcome.inventory,
        tooling_version(),
        (settings.managed_label_key, settings.managed_label_value),
    )
    if found is None or not _has_metadata(found, meta):
        _apply(target, name, {"metadata": meta}, "")
    generation = int((found or {}).get("metadata", {}).get("generation") or 1)
    rendered = status.render(
        outcome, previous if isinstance(previous, Mapping) else None, now, generation
    )
    _apply(target, name, {"metadata": {"name": name}, "status": rendered}, "status")
    return rendered


def ensure_crd(target: cluster.Cluster) -> bool:
    """Install (or update) the Sync CRD when the API server does not serve it; True if it did."""
    if target.resources().get(status.GROUP, status.KIND) is not None:
        return False
    install_crd(target)
    return True


def install_crd(target: cluster.Cluster) -> None:
    """Apply the packaged Sync CRD and wait until it is served."""
    target.apply(CRD_REF, crd_manifest())
    target.wait_established([CRD_NAME], CRD_TIMEOUT)
    target.wait_for_kinds([(status.GROUP, status.KIND)], CRD_TIMEOUT)


def crd_manifest() -> dict[str, Any]:
    """The CRD as shipped in the package."""
    text = importlib.resources.files("reconciler").joinpath("crds/sync.yaml").read_text()
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise TypeError("reconciler/crds/sync.yaml is not one mapping")
    return loaded


def _apply(target: cluster.Cluster, name: str, fields: dict[str, Any], subresource: str) -> None:
    body = {"apiVersion": status.API_VERSION, "kind": status.KIND, **fields}
    target.request(
        "PATCH",
        sync_path(name, subresource),
        query=[("fieldManager", target.field_manager), ("force", "true")],
        body=body,
        content_type="application/apply-patch+yaml",
        accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
        what=f"write Sync {name}" + (f" {subresource}" if subresource else ""),
    )


def _has_metadata(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    meta = found.get("metadata") or {}
    return all(
        (meta.get(part) or {}).get(key) == value
        for part in ("labels", "annotations")
        for key, value in wanted[part].items()
    )


def tooling_version() -> str:
    """The installed package's version, for the ApplySet tooling annotation and user agent."""
    try:
        return metadata.version("gitwarden")
    except metadata.PackageNotFoundError:
        return "unknown"
