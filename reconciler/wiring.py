"""The real ports of a reconciler process, built once from its configuration.

Owns composing the adapters behind `reconciler.ports`: git fetch of `refs/heads/<branch>` into
the cache directory, the trust and commit policy from files, the sealing keys read from the
cluster, the cluster adapter (inventory, stored commit, discovery) and the apply stage bound to
it. Used by `gitwarden reconcile` and by the loop. Must not run a pass or print anything.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconciler import (
    apply,
    applyplan,
    changeset,
    cluster,
    cluster_errors,
    config,
    decrypt,
    gitsource,
    objectdiff,
    ports,
    trustfiles,
)
from reconciler.sealed import keys
from reconciler.services import kube_keys


@dataclasses.dataclass(frozen=True)
class GitSource:
    """`ports.Source` over `gitsource.fetch`: the configured branch, exactly `refs/heads/…`."""

    settings: config.SourceConfig

    def fetch(self, since: str) -> gitsource.Checkout:
        return gitsource.fetch(
            self._source(), self.settings.cache_dir, self._ref, since, full=False
        )

    def tip(self) -> str:
        """The branch's tip commit on the remote (`git ls-remote`; nothing is fetched)."""
        return gitsource.remote_tip(self._source(), self._ref)

    @property
    def _ref(self) -> str:
        return f"refs/heads/{self.settings.branch}"

    def _source(self) -> gitsource.Source:
        return gitsource.Source(
            self.settings.url,
            known_hosts=self.settings.known_hosts,
            identity_file=self.settings.identity_file,
            ca_bundle=self.settings.ca_bundle,
            username_file=self.settings.username_file,
            password_file=self.settings.password_file,
        )


@dataclasses.dataclass(frozen=True)
class ClusterKeys:
    """`ports.Keys`: the active sealing keys in GitWarden's namespace, read on every pass."""

    read: Callable[[], keys.KeyRing]

    def ring(self) -> keys.KeyRing:
        return self.read()


@dataclasses.dataclass(frozen=True)
class ClusterPort:
    """`ports.Cluster` over the cluster adapter; discovery answers which kinds are namespaced."""

    target: cluster.Cluster

    def inventory(self, name: str) -> applyplan.Inventory:
        return self.target.inventory(name)

    def stored_commit(self, name: str) -> str | None:
        return self.target.stored_commit(name)

    def namespaced(self, group: str, kind: str) -> bool | None:
        try:
            # `resource`, not `resources().get`: a kind of a group whose aggregated server is
            # down is GroupUnavailable (retry), not an unknown kind (stall).
            return self.target.resource(group, kind).namespaced
        except cluster_errors.NotServed:
            return None


@dataclasses.dataclass(frozen=True)
class BoundApply:
    """`ports.Applier`: the apply stage on this cluster with these settings."""

    target: cluster.Cluster
    settings: config.ApplyConfig
    stop: threading.Event | None = None
    """Set on shutdown: apply starts no further object (the loop's SIGTERM)."""

    def __call__(self, plan: applyplan.ApplyPlan, *, dry_run: bool) -> changeset.ChangeSet:
        return apply.run(plan, self.target, self.settings, dry_run=dry_run, stop=self.stop)


@dataclasses.dataclass(frozen=True)
class Process:
    """The ports plus what the entry point needs besides them (status, diffs, closing)."""

    ports: ports.Ports
    target: cluster.Cluster
    settings: config.ApplyConfig

    def diff(self, plan: applyplan.ApplyPlan) -> tuple[objectdiff.ObjectDiff, ...]:
        """Per object, what applying `plan` would change (Secret values masked)."""
        return apply.diff(plan, self.target, self.settings)

    def close(self) -> None:
        self.target.close()


def json_getter(
    target: cluster.Cluster,
) -> Callable[[str, Sequence[tuple[str, str]]], Mapping[str, Any] | None]:
    """A JSON GET through the cluster adapter, None for 404 (for the key ring's Secrets)."""

    def get(path: str, query: Sequence[tuple[str, str]]) -> Mapping[str, Any] | None:
        try:
            body = target.request("GET", path, query=query, what=f"read {path}").body
        except cluster_errors.NotFound:
            return None
        return body if isinstance(body, Mapping) else None

    return get


def build(
    settings: config.ReconcilerConfig,
    kubeconfig: pathlib.Path | None,
    stop: threading.Event | None = None,
) -> Process:
    """Every port for `settings`; configuration errors (files, credentials) raise here.

    `stop` (the long-running process) makes apply start no new object once it is set.
    """
    trust = trustfiles.load(settings.trust)
    policy = trustfiles.commit_policy(settings.trust)
    chosen = kubeconfig or settings.identity.kubeconfig
    namespace = settings.identity.namespace
    target = cluster.connect(chosen, settings.apply)
    built = ports.Ports(
        source=GitSource(settings.source),
        trust=trust,
        commit_policy=policy,
        keys=ClusterKeys(lambda: kube_keys.read_ring_json(json_getter(target), namespace)),
        cluster=ClusterPort(target),
        apply=BoundApply(target, settings.apply, stop),
        secrets=decrypt.OpenedCache(),
    )
    return Process(built, target, settings.apply)
