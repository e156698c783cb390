"""The OPA transport against servers on 127.0.0.1 that answer in every way HTTP/1.1 allows.

The real OPA answers small decisions with a Content-Length; these scripted servers also answer
chunked, with a closing connection, with bytes nobody asked for, malformed or compressed, so
each of those is either read correctly or fails closed (an EngineError, never retried).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.harness.controlplane import LOOPBACK
from tests.webhook import reviews
from webhook import opatransport, policy

INPUT = reviews.golden()["cases"]["user_update_deployment_denied"]["input"]
DECISION = {"allowed": False, "reason": "not-gitops", "mode": "enforce", "message": "no"}
ANSWER = json.dumps({"result": DECISION}).encode()


def _read_request(conn: socket.socket) -> bytes:
    """One request (head and Content-Length body) from `conn`, or b"" at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return data


@contextmanager
def scripted(answer: Callable[[int], bytes]) -> Iterator[tuple[str, list[bytes], list[int]]]:
    """A server answering request n with answer(n); yields its URL, requests and recv counts."""
    seen: list[bytes] = []
    recvs: list[int] = []
    server = socket.create_server((LOOPBACK, 0))
    server.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():  # bounded: the test sets it on the way out
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                while True:
                    first = conn.recv(65536, socket.MSG_PEEK)
                    if not first:
                        break
                    recvs.append(len(first))
                    request = _read_request(conn)
                    if not request:
                        break
                    seen.append(request)
                    reply = answer(len(seen))
                    if not reply:
                        break
                    conn.sendall(reply)
                    if b"Connection: close" in reply:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.getsockname()[1]}", seen, recvs
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def _ok(body: bytes = ANSWER, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _chunked(body: bytes) -> bytes:
    parts = [body[:10], body[10:]]
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\nX-Trailer: yes\r\n\r\n"
    )


def _engine(url: str) -> policy.OpaEngine:
    return policy.OpaEngine(url, "admission/decision", 1.0)


def test_one_request_is_one_send_and_the_connection_is_kept() -> None:
    """Head and body arrive together (one segment), and three decisions share a connection."""
    with scripted(lambda _n: _ok()) as (url, seen, recvs):
        engine = _engine(url)
        for _ in range(3):
            assert engine.decide(INPUT).reason == "not-gitops"
        engine.close()
    assert len(seen) == 3
    assert all(r.startswith(b"POST /v1/data/admission/decision HTTP/1.1\r\n") for r in seen)
    # What the first read of each request saw is the whole request: one send, not two.
    assert recvs[:3] == [len(r) for r in seen]
    head = seen[0].split(b"\r\n\r\n", 1)[0].lower()
    assert b"accept-encoding: identity" in head
    assert b"content-type: application/json" in head
    assert json.loads(seen[0].split(b"\r\n\r\n", 1)[1]) == {"input": INPUT}


def test_a_chunked_answer_with_extensions_and_trailers_is_read() -> None:
    with scripted(lambda _n: _chunked(ANSWER)) as (url, seen, _):
        engine = _engine(url)
        assert engine.decide(INPUT).reason == "not-gitops"
        assert engine.decide(INPUT).reason == "not-gitops"
        engine.close()
    assert len(seen) == 2


def test_an_answer_that_closes_the_connection_is_followed_by_a_new_one() -> None:
    closing = _ok(extra=b"Connection: close\r\n")
    with scripted(lambda _n: closing) as (url, seen, _):
        engine = _engine(url)
        assert engine.decide(INPUT).reason == "not-gitops"
        assert engine.decide(INPUT).reason == "not-gitops"
        engine.close()
    assert len(seen) == 2


def test_bytes_after_an_answer_drop_the_connection_and_are_never_read_as_one() -> None:
    """A stray second answer on the wire must not become the next request's decision."""
    allow = json.dumps({"result": {**DECISION, "allowed": True, "reason": "exempt"}}).encode()
    with scripted(lambda n: _ok() + _ok(allow) if n == 1 else _ok()) as (url, seen, _):
        engine = _engine(url)
        assert engine.decide(INPUT).reason == "not-gitops"
        assert engine.decide(INPUT).reason == "not-gitops"
        engine.close()
    assert len(seen) == 2


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nbroken header\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{" + b"\r\n" * 2,
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
    ],
    ids=[
        "no-status-line",
        "bad-status",
        "bad-header",
        "bad-length",
        "compressed",
        "bad-chunk",
        "cut-short",
        "huge",
    ],
)
def test_an_answer_it_cannot_read_fails_closed_after_one_request(reply: bytes) -> None:
    """Each is an error at once (or at the timeout, for an answer cut short), never a retry."""
    with scripted(lambda _n: reply) as (url, seen, _):
        engine = _engine(url)
        with pytest.raises(policy.EngineError) as excinfo:
            engine.decide(INPUT)
        engine.close()
    assert excinfo.value.kind in ("unavailable", "timeout")
    assert len(seen) == 1


def test_a_header_value_that_would_break_the_request_is_refused_before_sending() -> None:
    with scripted(lambda _n: _ok()) as (url, seen, _):
        session = opatransport.DirectSession(LOOPBACK, int(url.rsplit(":", 1)[1]))
        with pytest.raises(requests.exceptions.InvalidHeader):
            session.post(url + "/v1/data/x", json={}, headers={"X-Token": "a\r\nX-Evil: 1"})
        with pytest.raises(requests.exceptions.InvalidURL):
            session.post(url + "/v1/data/x y", json={})
        assert session.post(url + "/v1/data/x", json={}).json() == {"result": DECISION}
        session.close()
    assert len(seen) == 1


def test_a_no_content_answer_is_read_without_waiting_for_a_body() -> None:
    """204 has no body whatever its headers say: read at once, and the connection stays usable."""
    replies = {1: b"HTTP/1.1 204 No Content\r\nDate: now\r\n\r\n", 2: _ok()}
    with scripted(lambda n: replies[n]) as (url, seen, _):
        session = opatransport.DirectSession(LOOPBACK, int(url.rsplit(":", 1)[1]))
        started = time.monotonic()
        empty = session.request("PATCH", f"{url}/v1/data", data=b"[]", timeout=2)
        assert (empty.status_code, empty.content) == (204, b"")
        assert time.monotonic() - started < 1  # not the 2 s timeout of a body read to the end
        answer = session.request("POST", f"{url}/v1/data/admission/decision", json={}, timeout=2)
        assert answer.json() == {"result": DECISION}
        assert session.adapter.connections == 1
        session.adapter.close()
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (b"not json", "named no labels.id"),
        (json.dumps({"result": {"labels": {}}}).encode(), "named no labels.id"),
        (json.dumps({"result": {"labels": {"id": 7}}}).encode(), "named no labels.id"),
        (
            json.dumps({"result": {"labels": {"id": "x"}, "discovery": {"name": "d"}}}).encode(),
            "configured with discovery",
        ),
    ],
)
def test_a_server_that_does_not_say_who_it_is_is_never_taken_as_fixed(
    config: bytes, why: str
) -> None:
    """Only a readable labels.id, no loading configuration and a refused write make it fixed."""
    refused = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    replies = {1: _ok(), 2: _ok(config), 3: refused}
    with scripted(lambda n: replies.get(n, _ok())) as (url, _seen, _):
        engine = _engine(url)
        decision, instance = engine.decide_and_identify(INPUT)
        assert decision.reason == "not-gitops"
        assert instance is not None
        assert not instance.fixed
        assert why in instance.why_not
        engine.close()
