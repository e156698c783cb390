"""The watch threads' own logic with a fake of our cluster port (`watches.Target`): list, then
watch from the list's version, resume from the last version after a dropped stream, list again
after 410 Gone (objects gone meanwhile become DELETED), back off, stop in bounded time."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from reconciler import cluster, cluster_errors, discovery, objectref, watches

CONFIGMAPS = discovery.Resource("", "ConfigMap", "configmaps", True, ("v1",))


def item(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "app", "resourceVersion": version}}


class Blocking:
    """A stream that yields nothing until closed (a quiet, healthy watch)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        self.closed.wait(10)
        raise StopIteration

    def close(self) -> None:
        self.closed.set()


class Scripted:
    """Each watch call takes the next script step: events then an error, or a quiet stream."""

    def __init__(self, lists: list[cluster.Page], steps: list[Any]) -> None:
        self.lists = lists
        self.steps = steps
        self.queries: list[dict[str, str]] = []
        self.listed = 0

    @property
    def field_manager(self) -> str:
        return "gitwarden"

    def resource(self, group: str, kind: str) -> discovery.Resource:
        if (group, kind) != ("", "ConfigMap"):
            raise cluster_errors.NotServed(f"no {kind}")
        return CONFIGMAPS

    def list_objects(self, resource: discovery.Resource, selector: str) -> Iterator[cluster.Page]:
        assert selector == "gitwarden.dev/managed=true"
        self.listed += 1
        yield self.lists.pop(0)

    def watch(self, path: str, query: Sequence[tuple[str, str]], timeout: float) -> Any:
        assert path in ("/api/v1/configmaps", "/apis/e2e.example/v1/widgets")
        self.queries.append(dict(query))
        step = self.steps.pop(0) if self.steps else Blocking()
        return step if isinstance(step, Blocking) else iter_then_raise(*step)


class iter_then_raise:  # reads as a verb where it is used
    def __init__(self, events: list[dict[str, Any]], error: Exception) -> None:
        self._events = list(events)
        self._error = error

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._events:
            return self._events.pop(0)
        raise self._error

    def close(self) -> None:
        pass


def test_resume_from_the_last_version_then_relist_after_gone() -> None:
    target = Scripted(
        lists=[
            cluster.Page([item("a", "5"), item("b", "6")], "10"),
            cluster.Page([item("a", "11")], "20"),
        ],
        steps=[
            ([{"type": "MODIFIED", "object": item("a", "11")},
              {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}],
             cluster_errors.Unreachable("watch: no answer")),
            ([], cluster_errors.Expired("watch: HTTP 410", status=410)),
        ],
    )  # fmt: skip
    seen: queue.Queue[watches.Event] = queue.Queue()
    restarts: list[str] = []
    follower = watches.Watches(target, "gitwarden.dev/managed=true", seen.put, restarts.append)
    follower.follow([CONFIGMAPS])
    got = [seen.get(timeout=5) for _ in range(5)]
    follower.stop()

    names = [(e.type, e.ref.name, e.resource_version, e.listed) for e in got]
    assert names == [
        ("ADDED", "a", "5", True),
        ("ADDED", "b", "6", True),
        ("MODIFIED", "a", "11", False),
        ("ADDED", "a", "11", True),  # the relist after 410
        ("DELETED", "b", "20", True),  # gone while the watch could not see it
    ]
    assert got[-1].ref == objectref.ObjectRef("", "ConfigMap", "app", "b")
    versions = [q["resourceVersion"] for q in target.queries]
    assert versions[:3] == ["10", "12", "20"]  # list, bookmark, relist
    assert all(q["allowWatchBookmarks"] == "true" for q in target.queries)
    assert restarts == ["ConfigMap", "ConfigMap"]
    assert target.listed == 2


def test_stop_ends_quiet_watches_within_the_bound_and_follow_drops_kinds() -> None:
    widgets = discovery.Resource("e2e.example", "Widget", "widgets", True, ("v1",))
    target = Scripted(lists=[cluster.Page([], "1"), cluster.Page([], "1")], steps=[])
    follower = watches.Watches(target, "gitwarden.dev/managed=true", lambda e: None, print)
    follower.follow([CONFIGMAPS, widgets])
    deadline = time.monotonic() + 5
    while len(target.queries) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # By (group, kind) too, as discovery serves it; a kind not served is not watched.
    follower.follow([("", "ConfigMap"), ("gone.example", "Gadget")])
    assert [k.kind for k in follower.kinds()] == ["ConfigMap"]
    started = time.monotonic()
    follower.stop()
    assert time.monotonic() - started < watches.STOP_TIMEOUT
    assert follower.kinds() == ()
