"""Attack: slow clients freeze the webhook (issue 9, item 5).

Before the fix, 20 TCP connections that each sent one byte held every gunicorn thread in a TLS
handshake without a deadline, so the API server's own requests (and the HPA, and break-glass)
timed out behind them. Each test opens 64 stalled connections against the real webhook under
gunicorn over TLS, with a real OPA, then shows a normal review is still answered in time and
that the server closes every stalled socket within its configured timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import LOOPBACK
from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews

STALLED = 64
HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT = 1.0, 2.0
# The event loop sweeps deadlines as they fall due; allow for scheduling on a busy machine.
SLACK = 1.5
CASE = reviews.golden()["cases"]["user_update_configmap_denied"]["input"]
BODY = reviews.body(reviews.review_from_input(CASE, uid="slow-1"))
HEAD = (
    b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    """One worker with two threads, so a few stalled clients would be enough to freeze it."""
    workdir: Path = tmp_path_factory.mktemp("slow")
    opa = OpaServer(workdir, {"gitwarden": {"admission": reviews.golden()["config"]}})
    opa.start()
    server = WebhookServer.self_signed(
        workdir,
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
            "GITWARDEN_WEBHOOK_WORKERS": "1",
            "GITWARDEN_WEBHOOK_THREADS": "2",
            "GITWARDEN_WEBHOOK_HANDSHAKE_TIMEOUT": str(HANDSHAKE_TIMEOUT),
            "GITWARDEN_WEBHOOK_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        },
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        opa.stop()


def _client_hello() -> bytes:
    """The first flight of a real TLS client (its ClientHello), captured in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=LOOPBACK)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _tls(server: WebhookServer) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, server.port), timeout=10)
    return server.tls_context().wrap_socket(raw, server_hostname=LOOPBACK)


def _one_byte(server: WebhookServer) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, server.port), timeout=10)
    sock.sendall(b"\x16")  # a TLS handshake record's first byte
    return sock


def _partial_client_hello(server: WebhookServer) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, server.port), timeout=10)
    hello = _client_hello()
    sock.sendall(hello[: len(hello) // 2])
    return sock


def _partial_head(server: WebhookServer) -> socket.socket:
    sock = _tls(server)
    sock.sendall(HEAD[:40])
    return sock


def _partial_body(server: WebhookServer) -> socket.socket:
    sock = _tls(server)
    sock.sendall(HEAD + BODY[:100])
    return sock


def _kept_alive_then_partial_head(server: WebhookServer) -> socket.socket:
    """A well-behaved first request, then a second one that never finishes arriving."""
    sock = _tls(server)
    sock.sendall(HEAD + BODY)
    answer = b""
    while b'"uid":"slow-1"' not in answer.replace(b" ", b""):
        chunk = sock.recv(65536)
        assert chunk, "the first request on the connection was not answered"
        answer += chunk
    sock.sendall(HEAD[:40])
    return sock


def _pipelined_then_partial_head(server: WebhookServer) -> socket.socket:
    """A whole request and the start of the next in one send (HTTP/1.1 pipelining)."""
    sock = _tls(server)
    sock.sendall(HEAD + BODY + HEAD[:40])
    return sock


STALLS: dict[str, tuple[Callable[[WebhookServer], socket.socket], float]] = {
    "one-byte": (_one_byte, HANDSHAKE_TIMEOUT),
    "partial-client-hello": (_partial_client_hello, HANDSHAKE_TIMEOUT),
    "handshake-then-partial-head": (_partial_head, REQUEST_TIMEOUT),
    "handshake-then-partial-body": (_partial_body, REQUEST_TIMEOUT),
    "kept-alive-then-partial-head": (_kept_alive_then_partial_head, REQUEST_TIMEOUT),
    "pipelined-then-partial-head": (_pipelined_then_partial_head, REQUEST_TIMEOUT),
}


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the peer closes `sock` (EOF or reset) before `deadline`."""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ssl.SSLError, ConnectionError):
            return True
        except TimeoutError:
            return False
    return False


@pytest.mark.parametrize("stall", list(STALLS), ids=list(STALLS))
def test_stalled_connections_neither_freeze_the_webhook_nor_outlive_their_timeout(
    webhook: WebhookServer, stall: str
) -> None:
    """64 stalled connections: a normal review is answered within 2 s; all are closed in time."""
    opener, timeout = STALLS[stall]
    stalled = [opener(webhook) for _ in range(STALLED)]
    opened = time.monotonic()
    try:
        time.sleep(0.2)  # let the server take them all up before the real request arrives
        started = time.monotonic()
        conn = http.client.HTTPSConnection(
            LOOPBACK, webhook.port, context=webhook.tls_context(), timeout=2
        )
        try:
            # Two requests on one kept-alive connection, as the API server sends them.
            for _ in range(2):
                conn.request("POST", "/validate", BODY, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = json.loads(resp.read())
                assert resp.status == 200
                assert answer["response"]["allowed"] is False
                assert "managed by GitOps" in answer["response"]["status"]["message"]
        finally:
            conn.close()
        assert time.monotonic() - started < 2.0
        still_open = [s for s in stalled if not _closed_by_server(s, opened + timeout + SLACK)]
        assert not still_open, f"{len(still_open)} stalled connections outlived {timeout} s"
    finally:
        for sock in stalled:
            sock.close()
    log = webhook.log()
    assert "not complete within" in log or "not received within" in log
    assert "Traceback" not in log


def test_expect_100_continue_gets_its_interim_answer_before_the_body(
    webhook: WebhookServer,
) -> None:
    """A client that waits for "100 Continue" is not mistaken for one stalling its body."""
    with _tls(webhook) as sock:
        sock.sendall(HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        sock.settimeout(REQUEST_TIMEOUT / 2)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(BODY)
        answer = b""
        while b'"uid":"slow-1"' not in answer.replace(b" ", b""):
            chunk = sock.recv(65536)
            assert chunk
            answer += chunk
    assert b"HTTP/1.1 200 " in answer


def test_a_large_body_stalled_in_a_thread_gets_400_at_the_deadline_and_is_closed(
    webhook: WebhookServer,
) -> None:
    """Past the event loop's 1 MiB, a thread reads on; the same deadline still holds there."""
    announced = 3 * 1024 * 1024
    with _tls(webhook) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(announced).encode() + b"\r\n\r\n" + b" " * (announced // 2)
        )
        answer = b""
        sock.settimeout(REQUEST_TIMEOUT + SLACK)
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"malformed AdmissionReview" in answer
    assert REQUEST_TIMEOUT - 0.5 < elapsed < REQUEST_TIMEOUT + SLACK
    assert "request not received within" in webhook.log()
