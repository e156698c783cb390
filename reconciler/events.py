"""Kubernetes Events on the Sync object: what a pass changed, why it stalled, what drift was fixed.

Owns the Event's shape and where it goes. The Sync object is cluster-scoped, and the API server
accepts a core/v1 Event about a cluster-scoped object only in the `default` namespace (or none;
its validation of `involvedObject.namespace`), so that is where these go, as they go for a
Node's Events; `kubectl describe sync/<name>` and `kubectl get events -n default` show them.
The webhook never sees an Event: its `matchConditions` skip core and events.k8s.io Events
inside the API server, so an Event never waits on it, never fails closed on it.

Written through the cluster adapter (`Cluster.request`); failing to record an Event never fails
a pass (the caller logs it). An Event's message is built from what is safe by construction:
the ChangeSet summary (counts), object references, commit ids and our error messages (which
name objects, never contents). Must not put an object's body, a diff or a value in an Event.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler import status, syncstore

if TYPE_CHECKING:
    from reconciler import cluster

NAMESPACE = "default"
COMPONENT = "gitwarden-reconciler"
MAX_MESSAGE = 1024  # events.k8s.io's limit; core/v1 has none, people read the first line


class Type(enum.Enum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    """One Event about the Sync object: a CamelCase reason and a one-line message."""

    type: Type
    reason: str
    message: str


def applied(commit: str, summary: str) -> Event:
    """A pass that changed something: the commit and the ChangeSet summary."""
    return Event(Type.NORMAL, "Applied", f"applied {commit[:12]}: {summary}")


def stalled(reason: str, message: str) -> Event:
    """A pass that stalled: the error's reason and message (ours name objects, never values)."""
    return Event(Type.WARNING, reason or "Stalled", message)


def drift_repaired(message: str) -> Event:
    """The drift helper's text: the object and the field manager(s) that changed it."""
    return Event(Type.WARNING, "DriftRepaired", message)


def body(
    sync: str, uid: str, event: Event, now: datetime.datetime, instance: str
) -> dict[str, Any]:
    """The core/v1 Event for Sync `sync` (uid `uid`)."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = event.message if len(event.message) <= MAX_MESSAGE else event.message[:1023] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            # A name of our own (not generateName): a request retried by the client after a
            # lost answer is a 409, not a duplicate Event.
            "name": f"{sync}.{uuid.uuid4().hex[:16]}",
            "namespace": NAMESPACE,
        },
        "involvedObject": {
            "apiVersion": status.API_VERSION,
            "kind": status.KIND,
            "name": sync,
            "uid": uid,
        },
        "reason": event.reason,
        "message": message,
        "type": event.type.value,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class Recorder:
    """Records Events about one Sync object through the cluster adapter."""

    def __init__(self, target: cluster.Cluster, sync: str, instance: str) -> None:
        self._target = target
        self._sync = sync
        self._instance = instance[:128]
        self._uid = ""

    def record(self, event: Event, now: datetime.datetime) -> None:
        """Create the Event; raises the cluster adapter's errors (the caller logs them)."""
        if not self._uid:
            # kubectl describe matches Events by the object's uid too; the Sync exists once
            # a pass has written its status, which comes before any Event.
            found = syncstore.read(self._target, self._sync)
            self._uid = str(((found or {}).get("metadata") or {}).get("uid") or "")
        self._target.request(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/events",
            body=body(self._sync, self._uid, event, now, self._instance),
            content_type="application/json",
            what=f"record Event {event.reason} on Sync {self._sync}",
        )
