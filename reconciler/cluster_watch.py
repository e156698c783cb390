"""One open watch response, read as a stream of events: the cluster adapter's streaming half.

Owns reading the body of a `?watch=true` answer line by line (one JSON event a line), bounded
(a line longer than `MAX_LINE` is refused, not buffered), turning an in-stream `ERROR` event
into our error (410 Gone is `cluster_errors.Expired`: the caller lists again), mapping every
read failure (timeout, reset, a shut-down socket) to `Unreachable`, and `close` from another
thread, which shuts the socket down so a reader blocked on it returns at once. The request is
sent by `cluster.Cluster.watch`; this module never opens a connection and never imports the
kubernetes client. Errors name the watch and the status only, never an event's object.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import urllib3

from reconciler import cluster_errors

CHUNK = 64 * 1024
MAX_LINE = 16 * 1024 * 1024  # etcd stores objects up to 1.5 MB; JSON of one stays well under


class WatchStream:
    """Iterates over the events (`{"type": ..., "object": {...}}`) of one watch response."""

    def __init__(self, response: urllib3.BaseHTTPResponse, what: str) -> None:
        self._response = response
        self._what = what
        self._lock = threading.Lock()
        self._closed = False
        self._events = self._read()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._events)

    def close(self) -> None:
        """End the stream; safe from any thread, and more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Wakes a reader blocked in recv on this socket (close alone would not); a response
        # already released or never connected has no reader blocked on it.
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self._response.shutdown()
        self._response.close()
        self._response.release_conn()

    @property
    def closed(self) -> bool:
        return self._closed

    def _read(self) -> Iterator[dict[str, Any]]:
        pending = b""
        try:
            for chunk in self._response.stream(CHUNK, decode_content=True):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield self._event(line)
                if len(pending) > MAX_LINE:
                    raise cluster_errors.Rejected(
                        f"{self._what}: an event longer than {MAX_LINE} bytes"
                    )
            if pending.strip():
                yield self._event(pending)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._closed:
                raise cluster_errors.unreachable(self._what, exc) from exc
        finally:
            self.close()

    def _event(self, line: bytes) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise cluster_errors.Busy(f"{self._what}: an event that is not JSON") from exc
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise cluster_errors.Busy(f"{self._what}: an event without an object")
        if event.get("type") == "ERROR":
            raise error_event(self._what, event["object"])
        return event


def error_event(what: str, status: dict[str, Any]) -> cluster_errors.ClusterError:
    """The error for an in-stream ERROR event (a Status object; 410 when history is gone)."""
    code = status.get("code")
    body = json.dumps(status).encode()
    return cluster_errors.for_status(what, code if isinstance(code, int) else 500, "", body)
