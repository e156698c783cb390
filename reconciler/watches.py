"""Watches of the managed kinds: one thread per kind, each object change handed on as an `Event`.

Owns following a set of kinds by the managed label: list first (whole objects, page by page),
then watch from the list's resourceVersion with bookmarks; after a stream ends or drops, watch
again from the last resourceVersion seen; after 410 Gone (history compacted), list again and
report objects that vanished meanwhile as DELETED; after any other error wait with bounded
exponential backoff. `restarted(kind)` is called on each restart after an error, for metrics.

An `Event` keeps what drift repair needs and no more: the object's ref, resourceVersion, uid,
labels, the managedFields entries of other managers (field keys, never values) and a digest of
the values at the fields our field manager applied (`managedfields.owned_digest`), computed
here so that the object itself, a Secret's data among it, is dropped as soon as its line is
read. An object whose managed label is removed leaves the selector: the API server sends
DELETED for it (with its previous content); drift repair reads it to tell the two apart.

Must not decide anything about drift (drift.py does) nor import the kubernetes client: the
cluster adapter sends every request. `sink` is called on the watch threads; it must hand the
event on (to the loop's queue) and return quickly.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from reconciler import (
    cluster,
    cluster_errors,
    discovery,
    errors,
    managedfields,
    objectref,
)

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
WATCH_SECONDS = 300.0  # the server ends each stream after about this long (jittered below)
BACKOFF_MIN, BACKOFF_MAX = 0.2, 30.0
STOP_TIMEOUT = 5.0
_TYPES: frozenset[str] = frozenset(("ADDED", "MODIFIED", "DELETED", "BOOKMARK"))


@dataclass(frozen=True)
class Event:
    """One change of a managed object, as drift repair needs it.

    `listed` marks events made from a (re)list rather than a watch: ADDED for each object
    listed, DELETED for one known before that the list no longer has. `owned` is the digest of
    the values at the fields our field manager applies (b"" for DELETED), `our_time` when our
    Apply entry last changed, `managers` every other managedFields entry.
    """

    type: EventType
    ref: objectref.ObjectRef
    resource_version: str
    uid: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    managers: tuple[managedfields.Entry, ...] = ()
    owned: bytes = b""
    our_time: str = ""
    listed: bool = False


class Stream(Protocol):
    """One open watch (`cluster_watch.WatchStream` is one): events, and `close` from anywhere."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __next__(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Target(Protocol):
    """What the watches need of the cluster adapter (`cluster.Cluster` is one)."""

    @property
    def field_manager(self) -> str: ...

    def resource(self, group: str, kind: str) -> discovery.Resource: ...

    def list_objects(
        self, resource: discovery.Resource, selector: str
    ) -> Iterator[cluster.Page]: ...

    def watch(self, path: str, query: Sequence[tuple[str, str]], timeout: float) -> Stream: ...


def decode(
    kind_of: discovery.Resource,
    event_type: EventType,
    obj: Mapping[str, Any],
    field_manager: str,
    *,
    listed: bool = False,
) -> Event:
    """The Event for one object of kind `kind_of` (the object is not kept)."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    labels = meta.get("labels")
    ref = objectref.ObjectRef(
        kind_of.group,
        kind_of.kind,
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )
    gone = event_type == "DELETED"
    return Event(
        type=event_type,
        ref=ref,
        resource_version=str(meta.get("resourceVersion") or ""),
        uid=str(meta.get("uid") or ""),
        labels=dict(labels) if isinstance(labels, Mapping) else {},
        managers=managedfields.others(obj, field_manager),
        owned=b"" if gone else managedfields.owned_digest(obj, field_manager),
        our_time=managedfields.our_time(obj, field_manager),
        listed=listed,
    )


class Watches:
    """The watch threads of the managed kinds; `follow` sets the kinds, `stop` ends them."""

    def __init__(
        self,
        target: Target,
        selector: str,
        sink: Callable[[Event], None],
        restarted: Callable[[str], None],
    ) -> None:
        self._target = target
        self._selector = selector
        self._sink = sink
        self._restarted = restarted
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], _KindWatch] = {}

    def follow(self, kinds: Iterable[discovery.Resource | tuple[str, str]]) -> None:
        """Watch exactly `kinds`: start threads for new ones, stop those no longer given.

        A kind is a served `Resource`, or (group, kind) looked up in discovery; one that is
        not served (its CRD is gone) is not watched.
        """
        wanted: dict[tuple[str, str], discovery.Resource] = {}
        for kind in kinds:
            resource = kind if isinstance(kind, discovery.Resource) else self._served(*kind)
            if resource is not None:
                wanted[(resource.group, resource.kind)] = resource
        with self._lock:
            gone = [w for key, w in self._running.items() if key not in wanted]
            for watch in gone:
                del self._running[(watch.resource.group, watch.resource.kind)]
                watch.stop()
            for key, resource in sorted(wanted.items()):
                current = self._running.get(key)
                if current is not None and current.resource == resource:
                    continue
                if current is not None:  # served under another version or plural now
                    current.stop()
                    gone.append(current)
                started = _KindWatch(
                    resource, self._target, self._selector, self._sink, self._restarted
                )
                self._running[key] = started
                started.start()
        _join(gone)

    def _served(self, group: str, kind: str) -> discovery.Resource | None:
        try:
            return self._target.resource(group, kind)
        except errors.ReconcileError:
            # Not served, its aggregated server away, or discovery unreachable: not watched
            # until the next `follow` (after the next pass, which reports the cause).
            return None

    def kinds(self) -> tuple[discovery.Resource, ...]:
        """The kinds being watched."""
        with self._lock:
            return tuple(w.resource for w in self._running.values())

    def stop(self) -> None:
        """Stop every watch thread and wait for them, at most STOP_TIMEOUT in all."""
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for watch in running:
            watch.stop()
        _join(running)


def _join(watching: Sequence[_KindWatch]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    for watch in watching:
        watch.thread.join(max(deadline - time.monotonic(), 0.0))


class _KindWatch:
    """List, then watch, one kind until stopped; resumes, relists and backs off on its own."""

    def __init__(
        self,
        resource: discovery.Resource,
        target: Target,
        selector: str,
        sink: Callable[[Event], None],
        restarted: Callable[[str], None],
    ) -> None:
        self.resource = resource
        self.thread = threading.Thread(target=self._run, name=f"watch-{resource.kind}", daemon=True)
        self._target = target
        self._selector = selector
        self._sink = sink
        self._restarted = restarted
        self._stopping = threading.Event()
        self._stream: Stream | None = None
        self._stream_lock = threading.Lock()
        self._known: set[objectref.ObjectRef] = set()
        self._version = ""

    @property
    def kind_name(self) -> str:
        return objectref.ObjectRef(self.resource.group, self.resource.kind, "", "x").group_kind

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not self._stopping.is_set():
            try:
                if not self._version:
                    self._relist()
                if self._watch_once():
                    backoff = BACKOFF_MIN
                    continue
            except cluster_errors.Expired:
                self._version = ""  # the history is gone: list again
            except errors.ReconcileError:
                pass  # resume from the last resourceVersion after the backoff
            except Exception:
                # Whatever else went wrong (an object the decoder did not expect, a bug), a
                # watch thread that died would end drift repair for its kind in silence.
                self._version = ""
            if self._stopping.is_set():
                return
            self._restarted(self.kind_name)
            self._stopping.wait(backoff * random.uniform(0.5, 1.0))  # noqa: S311  # jitter
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _relist(self) -> None:
        target, selector = self._target, self._selector
        manager, version, seen = target.field_manager, "", set()
        for page in target.list_objects(self.resource, selector):
            version = page.resource_version or version
            for item in page.items:
                event = decode(self.resource, "ADDED", item, manager, listed=True)
                seen.add(event.ref)
                self._emit(event)
            del page
        for ref in sorted(self._known - seen):
            self._emit(Event("DELETED", ref, version, listed=True))
        self._known = seen
        self._version = version

    def _watch_once(self) -> bool:
        """One stream from the last resourceVersion; False when it ended at once and empty."""
        target = self._target
        query = [
            ("labelSelector", self._selector),
            ("resourceVersion", self._version),
            ("allowWatchBookmarks", "true"),
        ]
        seconds = WATCH_SECONDS * random.uniform(0.8, 1.0)  # noqa: S311  # spread restarts
        began = time.monotonic()
        stream = target.watch(self.resource.path(), query, seconds)
        with self._stream_lock:
            self._stream = stream
        if self._stopping.is_set():
            stream.close()
        received = False
        try:
            for raw in stream:
                received = True
                self._handle(raw, target.field_manager)
        finally:
            stream.close()
            with self._stream_lock:
                self._stream = None
        # A stream the server ends at once, again and again, must not spin: back off.
        return received or time.monotonic() - began >= 1.0

    def _handle(self, raw: Mapping[str, Any], manager: str) -> None:
        kind = str(raw.get("type") or "")
        obj = raw.get("object")
        if kind not in _TYPES or not isinstance(obj, Mapping):
            return
        if kind == "BOOKMARK":
            meta = obj.get("metadata")
            version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
            self._version = str(version or self._version)
            return
        event = decode(self.resource, kind, obj, manager)  # type: ignore[arg-type]  # checked
        if event.type == "DELETED":
            self._known.discard(event.ref)
        else:
            self._known.add(event.ref)
        self._version = event.resource_version or self._version
        self._emit(event)

    def _emit(self, event: Event) -> None:
        if not self._stopping.is_set():
            self._sink(event)
