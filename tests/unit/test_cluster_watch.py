"""Reading a watch response: lines across chunks, in-stream errors, and a close from another
thread that ends a read blocked on a silent connection (a real socket on 127.0.0.1)."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3

from reconciler import cluster_errors, cluster_watch


def event(kind: str, name: str, version: str) -> bytes:
    obj = {"kind": "ConfigMap", "metadata": {"name": name, "resourceVersion": version}}
    return json.dumps({"type": kind, "object": obj}).encode()


def stream_of(body: bytes) -> cluster_watch.WatchStream:
    response = urllib3.HTTPResponse(body=io.BytesIO(body), preload_content=False)
    return cluster_watch.WatchStream(response, "watch /api/v1/configmaps")


def status(code: int, reason: str) -> bytes:
    obj = {"kind": "Status", "status": "Failure", "reason": reason, "code": code,
           "message": "carries what was sent: s3cr3t"}  # fmt: skip
    return json.dumps({"type": "ERROR", "object": obj}).encode()


def test_events_are_read_line_by_line_whatever_the_chunks() -> None:
    body = event("ADDED", "a", "1") + b"\n\n" + event("MODIFIED", "a", "2") + b"\n"
    body += event("DELETED", "a", "3")  # the last line may lack its newline
    got = [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in stream_of(body)]
    assert got == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "3")]


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (410, "Expired", cluster_errors.Expired),
        (410, "Gone", cluster_errors.Expired),
        (500, "InternalError", cluster_errors.Busy),
        (403, "Forbidden", cluster_errors.Forbidden),
    ],
)
def test_an_error_event_is_our_error_without_its_message(
    code: int, reason: str, expected: type[Exception]
) -> None:
    body = event("ADDED", "a", "1") + b"\n" + status(code, reason) + b"\n"
    events = stream_of(body)
    assert next(events)["type"] == "ADDED"
    with pytest.raises(expected) as caught:
        next(events)
    assert f"HTTP {code}" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_a_line_that_is_not_an_event_is_busy() -> None:
    with pytest.raises(cluster_errors.Busy):
        list(stream_of(b"<html>proxy error</html>\n"))
    with pytest.raises(cluster_errors.Busy):
        list(stream_of(b'{"type": "ADDED"}\n'))


class _Silent(http.server.BaseHTTPRequestHandler):
    """Answers 200 with one event, then keeps the connection open and says nothing."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        line = event("ADDED", "a", "1") + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()
        self.server.release.wait(10)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@pytest.fixture
def silent_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/watch"
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def test_close_from_another_thread_ends_a_blocked_read_at_once(silent_server: str) -> None:
    pool = urllib3.PoolManager()
    response = pool.request("GET", silent_server, preload_content=False, timeout=30)
    stream = cluster_watch.WatchStream(response, "watch /api/v1/configmaps")
    seen: list[str] = []
    failures: list[BaseException] = []

    def read() -> None:
        try:
            seen.extend(e["type"] for e in stream)
        except BaseException as exc:  # asserted below
            failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    stream.close()
    reader.join(5)
    assert not reader.is_alive()
    assert time.monotonic() - started < 2.0
    assert seen == ["ADDED"]
    assert failures == []  # a stream closed on purpose ends quietly
    assert stream.closed
