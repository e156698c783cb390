"""Bounded polls over the cluster adapter: CRDs Established, kinds served, an object gone.

Owns the one polling loop (doubling delay from 50 ms to 500 ms, never past the deadline) and
what each wait checks. A wait that runs out is `Transient` (the next pass tries again); a CRD
whose names conflict is `Stalled`. Must not talk to the API server except through the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from reconciler import cluster_errors, objectref

if TYPE_CHECKING:
    from reconciler import cluster

CRD_GROUP = "apiextensions.k8s.io"
POLL_START, POLL_MAX = 0.05, 0.5


def poll(done: Callable[[], bool], timeout: float, fail: Callable[[], Exception]) -> None:
    """Call `done` until it is true; raise `fail()` once the next try would pass `timeout`."""
    deadline = time.monotonic() + timeout
    delay = POLL_START
    while not done():
        if time.monotonic() + delay > deadline:
            raise fail()
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX)


def kinds_served(target: cluster.Cluster, kinds: Iterable[tuple[str, str]], timeout: float) -> None:
    """Refresh discovery until every (group, kind) is served."""
    wanted = sorted(set(kinds))

    def missing() -> list[tuple[str, str]]:
        served = target.refresh_discovery()
        return [k for k in wanted if served.get(*k) is None]

    def fail() -> Exception:
        names = ", ".join(f"{k}.{g}" if g else k for g, k in missing())
        return cluster_errors.NotEstablished(
            f"kinds not served {timeout:.0f}s after their CRDs were established: {names}"
        )

    poll(lambda: not missing(), timeout, fail)


def established(target: cluster.Cluster, names: Iterable[str], timeout: float) -> None:
    """Poll each named CRD until its Established condition is True."""
    for name in sorted(set(names)):
        ref = objectref.ObjectRef(CRD_GROUP, "CustomResourceDefinition", "", name)

        def ready(ref: objectref.ObjectRef = ref) -> bool:
            conditions = _conditions(target.read(ref))
            if conditions.get("NamesAccepted") == "False":
                raise cluster_errors.NamesNotAccepted(
                    f"CustomResourceDefinition {ref.name}: its names conflict with another CRD"
                )
            return conditions.get("Established") == "True"

        poll(
            ready,
            timeout,
            lambda ref=ref: cluster_errors.NotEstablished(  # type: ignore[misc]
                f"CustomResourceDefinition {ref.name} not Established after {timeout:.0f}s"
            ),
        )


def gone(target: cluster.Cluster, ref: objectref.ObjectRef, uid: str, timeout: float) -> None:
    """Poll until the object with `uid` no longer exists (a new one may have its name)."""

    def absent() -> bool:
        live = target.read_meta(ref)
        return live is None or live.uid != uid

    poll(
        absent,
        timeout,
        lambda: cluster_errors.NotGone(
            f"{ref.display()} still exists {timeout:.0f}s after its delete (finalizers?)"
        ),
    )


def _conditions(obj: Any) -> dict[str, str]:
    status = obj.get("status") if isinstance(obj, dict) else None
    items = status.get("conditions") if isinstance(status, dict) else None
    return {
        str(c.get("type")): str(c.get("status"))
        for c in (items if isinstance(items, list) else [])
        if isinstance(c, dict)
    }
