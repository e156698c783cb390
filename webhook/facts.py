"""What the webhook learns beside the AdmissionReview before the policy decides.

Owns the lookups and when each is made: the parent of a labelless subresource (only the
configured parent kinds), the phase of a namespace (only for the controllers whose allowance
depends on it), the managed objects a namespace or CRD about to be deleted still holds (only
on those routes), and whether the pod named in a pod-bound GitOps token is alive with its uid
(only with verify_pod_live). Each lookup is asked only where its answer can change the
decision, so no other request waits on, or fails closed with, a lookup. Lookup failures are
`parents.LookupFailed`; the app answers them like an unavailable engine. No Flask, no policy.

The same rules can be run by a caller that must not wait (the serving worker's event loop):
`next_read` runs them on the answers known so far (`Known`; none at first) and returns the
first read they still need, which the caller makes with `start` and adds to what is known,
until the rules have all they ask for; `gather` given those answers then asks the cluster
nothing again.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from webhook import config as config_mod
from webhook import parents, review


@dataclass(frozen=True)
class Route:
    """What the webhook path the API server called says about a request."""

    namespace_protected: bool = False
    parent: bool = False
    namespace_delete: bool = False
    crd_delete: bool = False


class LazyLookup:
    """Builds the cluster lookup on first use, so a worker starts even without cluster access."""

    def __init__(
        self,
        kubeconfig: Path | None,
        timeout: float,
        given: parents.ParentLookup | None,
        observe: parents.Observe | None = None,
    ) -> None:
        """`observe`, when given, is told of every read (`parents.TimedLookup`)."""
        self._kubeconfig, self._timeout, self._observe = kubeconfig, timeout, observe
        self._lookup = self._timed(given) if given is not None else None
        self._lock = threading.Lock()

    def _timed(self, lookup: parents.ParentLookup) -> parents.ParentLookup:
        return lookup if self._observe is None else parents.TimedLookup(lookup, self._observe)

    def get(self) -> parents.ParentLookup:
        lookup = self._lookup
        if lookup is not None:  # every lookup after the first: no lock on the request path
            return lookup
        with self._lock:
            if self._lookup is None:
                try:
                    self._lookup = self._timed(
                        parents.KubeParentLookup.load(self._kubeconfig, self._timeout)
                    )
                except parents.UnsupportedConfig as exc:  # our own refusal: its reason helps
                    raise parents.LookupFailed(
                        f"cannot use the kubeconfig for lookups: {exc}"
                    ) from None
                except Exception as exc:
                    raise parents.LookupFailed(
                        f"no cluster credentials for lookups: {type(exc).__name__}"
                    ) from None
            return self._lookup


_Cluster = Callable[[], parents.ParentLookup]


Known = dict[parents.Read, parents.Answered | parents.LookupFailed]
"""The answers (or failures) of the reads made so far for one request."""


class _WouldLookUp(Exception):
    """The rules reached a read nobody has made yet."""

    def __init__(self, read: parents.Read) -> None:
        super().__init__(read.ref)
        self.read = read


class _Replay:
    """A ParentLookup answering from `known`, and from `then()`'s lookup (or none) for the rest."""

    def __init__(self, known: Known, then: _Cluster | None) -> None:
        self._known, self._then = known, then

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> parents.ParentMeta | None:
        read = parents.object_read(group, version, resource, namespace, name)
        if read in self._known or self._then is None:
            return cast(parents.ParentMeta | None, self._answer(read))
        return self._then().metadata(group, version, resource, namespace, name)

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        read = parents.list_read(group, version, resource, namespace, selector)
        if read in self._known or self._then is None:
            return cast(bool, self._answer(read))
        return self._then().any_labelled(group, version, resource, namespace, selector)

    def _answer(self, read: parents.Read) -> parents.Answered:
        if read not in self._known:
            raise _WouldLookUp(read)
        found = self._known[read]
        if isinstance(found, parents.LookupFailed):
            raise found
        return found


class Facts:
    """Turns a parsed request and its route into the request and facts the policy decides on."""

    def __init__(
        self,
        admission: config_mod.AdmissionConfig,
        lookup: LazyLookup,
        annotation_keys: frozenset[str],
    ) -> None:
        self._config, self._lookup, self._keys = admission, lookup, annotation_keys
        self._parent_rules = {(p.group, p.resource, p.subresource) for p in admission.parent_rules}
        self._terminating_users = frozenset(
            u for a in admission.system_allowances if a.namespace_terminating for u in a.usernames
        )
        label = admission.managed_label
        self._managed = f"{label.key}={label.value}"

    def gather(
        self, req: review.AdmissionRequest, route: Route, known: Known | None = None
    ) -> tuple[review.AdmissionRequest, dict[str, Any]]:
        """The request (with the parent's metadata on the parent route) and policy_input kwargs.

        Reads in `known` (made by `start`) are answered from it; any other is made now.
        """
        if not known:
            return self._gather(req, route, self._lookup.get)
        replay = _Replay(known, self._lookup.get)
        return self._gather(req, route, lambda: replay)

    def next_read(
        self, req: review.AdmissionRequest, route: Route, known: Known
    ) -> tuple[review.AdmissionRequest, dict[str, Any]] | parents.Read:
        """What `gather` answers given the reads in `known`, or the first read it still needs.

        Never waits: no read is made here. `LookupFailed` as `gather` raises it (a failed
        read in `known` among them).
        """
        replay = _Replay(known, None)
        try:
            return self._gather(req, route, lambda: replay)
        except _WouldLookUp as exc:
            return exc.read

    def start(self, read: parents.Read) -> parents.Pending | None:
        """`read` begun for an event loop, or None: this lookup makes its reads on threads
        only (a test's fake, a server named by host name, every loop connection busy)."""
        lookup = self._lookup.get()
        return lookup.start(read) if isinstance(lookup, parents.LoopReads) else None

    def _gather(
        self, req: review.AdmissionRequest, route: Route, cluster: _Cluster
    ) -> tuple[review.AdmissionRequest, dict[str, Any]]:
        if route.parent:
            req = self._with_parent(req, cluster)
        deleting = req.operation == "DELETE"
        return req, {
            "namespace_protected": route.namespace_protected,
            "namespace_terminating": req.username in self._terminating_users
            and self._namespace_terminating(req, cluster),
            "namespace_holds_managed": route.namespace_delete
            and deleting
            and self._namespace_holds_managed(req, cluster),
            "pod_live": self._pod_live(req, cluster),
            "crd_holds_managed": route.crd_delete
            and deleting
            and self._crd_holds_managed(req, cluster),
        }

    def _with_parent(
        self, req: review.AdmissionRequest, cluster: _Cluster
    ) -> review.AdmissionRequest:
        # Only the configured kinds: anyone who can reach the port could otherwise make the
        # webhook read (and reveal the labels of) any object its RBAC happens to allow.
        if (req.resource_group, req.resource, req.sub_resource) not in self._parent_rules:
            raise parents.LookupFailed(f"{req.ref}: not a configured parent kind")
        parent = cluster().metadata(
            req.resource_group, req.resource_version, req.resource, req.namespace, req.name
        )
        if parent is None:
            # No such object: nothing managed is touched (the API server answers 404 itself).
            empty = review.ObjectMeta(labels={}, annotations={})
            return dataclasses.replace(req, object=empty, old_object=empty)
        meta = review.ObjectMeta(
            labels=dict(parent.labels),
            annotations={k: v for k, v in parent.annotations.items() if k in self._keys},
            terminating=parent.terminating,
        )
        return dataclasses.replace(req, object=meta, old_object=meta)

    def _namespace_terminating(self, req: review.AdmissionRequest, cluster: _Cluster) -> bool:
        if req.resource_group == "" and req.resource == "namespaces":
            stored = req.old_object
            return stored is not None and stored.terminating
        if not req.namespace:
            return False
        namespace = cluster().metadata("", "v1", "namespaces", "", req.namespace)
        return namespace is not None and namespace.terminating

    def _namespace_holds_managed(self, req: review.AdmissionRequest, cluster: _Cluster) -> bool:
        if not (req.resource_group == "" and req.resource == "namespaces"):
            return False
        lookup = cluster()
        return any(
            lookup.any_labelled(group, version, resource, req.name, self._managed)
            for group, version, resource in self._config.namespace_content_kinds
        )

    def _crd_holds_managed(self, req: review.AdmissionRequest, cluster: _Cluster) -> bool:
        crd = req.crd
        if crd is None or crd.group not in self._config.guarded_crd_groups:
            return False
        # All namespaces at once: the cluster-wide list path serves namespaced kinds too.
        return cluster().any_labelled(crd.group, crd.version, crd.plural, "", self._managed)

    def _pod_live(self, req: review.AdmissionRequest, cluster: _Cluster) -> bool:
        # Impersonation can claim any pod-name and pod-uid extras; a real pod-bound token names
        # a live pod (the API server checks that when it authenticates the token).
        c = self._config
        if not (c.verify_pod_live and req.pod_name and req.username in c.gitops_usernames):
            return False
        pod = cluster().metadata("", "v1", "pods", c.namespace, req.pod_name)
        if pod is None or pod.terminating or not req.pod_uid or pod.uid != req.pod_uid:
            return False
        return all(pod.labels.get(k) == v for k, v in c.pod_labels.items())
