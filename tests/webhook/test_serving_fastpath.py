"""The worker's fast path under real gunicorn over TLS, with a real OPA.

A well-formed review POST is answered by the worker without gunicorn's parser, environ and
Response; each answer must equal gunicorn's own for the same request byte for byte (the Date
value aside). gunicorn's answer is had by sending the same request with one harmless header
whose value carries a non-ASCII byte: gunicorn accepts it, the fast path never takes it.
Which path answered is counted by the worker and logged when it exits, so each test reads
exact counts after stopping its server (one worker) rather than guessing from timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import pki
from tests.harness.controlplane import LOOPBACK
from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews
from webhook import app as app_mod

CASE = reviews.golden()["cases"]["user_update_configmap_denied"]["input"]
MAX_BODY = 64 * 1024
FALLBACK_HEADER = b"X-Gitwarden-Test: caf\xe9\r\n"  # obs-text: gunicorn takes it, we do not
_COUNTS = re.compile(rb"answered (\d+) requests on the fast path and handed (\d+) to gunicorn")
_RECALLED = re.compile(rb"(\d+) of the fast ones were answered from memory on the event loop")


def request(target: str, body: bytes, *, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    """A POST as the API server sends it, with `extra` header lines before the blank line."""
    return (
        b"POST " + target.encode() + b" " + version + b"\r\nHost: " + LOOPBACK.encode() + b"\r\n"
        b"Accept: application/json, */*\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def connect(server: WebhookServer, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, server.port), timeout=10)
    return (context or server.tls_context()).wrap_socket(raw, server_hostname=LOOPBACK)


def read_answer(sock: ssl.SSLSocket, pending: bytearray) -> bytes:
    """One whole answer (an interim 1xx is an answer of its own); `pending` keeps the rest."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {bytes(pending)!r}"
        pending += chunk
    end = pending.index(b"\r\n\r\n") + 4
    head = bytes(pending[:end])
    length = re.search(rb"\r\ncontent-length: *(\d+)\r\n", head, re.IGNORECASE)
    if head.startswith(b"HTTP/1.1 1"):
        size = end
    elif length is not None:
        size = end + int(length.group(1))
    else:  # no length: the server closes after the body
        while chunk := sock.recv(65536):
            pending += chunk
        size = len(pending)
    while len(pending) < size:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-answer"
        pending += chunk
    answer = bytes(pending[:size])
    del pending[:size]
    return answer


def closed_by_server(sock: ssl.SSLSocket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True


def undated(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r\n]+\r\n", b"\r\nDate: -\r\n", answer, count=1)


def counts(server: WebhookServer) -> tuple[int, int]:
    """(fast path, gunicorn) of the server's one worker, once it has stopped."""
    server.stop()
    found = _COUNTS.findall(server.log().encode())
    assert len(found) == 1, f"expected one worker's counts in the log, found {found}"
    return int(found[0][0]), int(found[0][1])


def recalled(server: WebhookServer) -> int:
    """How many of the fast path's answers the stopped worker sent from memory on its loop."""
    server.stop()
    found = _RECALLED.findall(server.log().encode())
    assert len(found) == 1, f"expected one worker's counts in the log, found {found}"
    return int(found[0])


CACHES = {"uncached": {}, "cached": {"GITWARDEN_WEBHOOK_DECISION_CACHE": "4096"}}
"""Each served test runs without the decision cache and with it: with it, a repeated review is
answered from memory on the worker's event loop, which must answer exactly as a thread does."""


@pytest.fixture(params=sorted(CACHES))
def served(
    opa_server: OpaServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[WebhookServer]:
    """One worker (exact counts), a real OPA, reviews up to 64 KiB; without and with the cache."""
    server = _webhook(opa_server, tmp_path, CACHES[request.param])
    try:
        yield server
    finally:
        server.stop()


def _webhook(opa: OpaServer, workdir: Path, env: dict[str, str]) -> WebhookServer:
    server = WebhookServer.self_signed(
        workdir,
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
            "GITWARDEN_WEBHOOK_WORKERS": "1",
            "GITWARDEN_WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY),
            **env,
        },
    )
    server.start()
    return server


def _review(uid: str, name: str | None = None) -> bytes:
    """The configmap case's review; another `name` makes it another policy input."""
    case = CASE if name is None else {**CASE, "name": name}
    return reviews.body(reviews.review_from_input(case, uid=uid))


COMPARED: dict[str, tuple[str, bytes]] = {
    **{
        f"{path}{query}": (path + query, _review(f"uid{path.replace('/', '-')}"))
        for path in app_mod.REVIEW_PATHS
        for query in ("", "?timeout=10s")
    },
    "malformed-400": ("/validate", b"{not json"),
    "oversized-400": ("/validate?timeout=10s", b" " * (MAX_BODY + 100)),
}


def test_fast_answers_equal_gunicorns_byte_for_byte(served: WebhookServer) -> None:
    """Every review path (with and without the API server's query), a 400 for a malformed
    body and one for an oversized body: the same bytes from both paths, Date aside."""
    sock, pending = connect(served), bytearray()
    fast_answers: dict[str, bytes] = {}
    try:
        for name, (target, body) in COMPARED.items():
            # Alternating on one kept-alive connection: the paths share connections too.
            sock.sendall(request(target, body))
            fast = read_answer(sock, pending)
            sock.sendall(request(target, body, extra=FALLBACK_HEADER))
            slow = read_answer(sock, pending)
            assert undated(fast) == undated(slow), name
            assert b"\r\nConnection: keep-alive\r\n" in fast, name
            fast_answers[name] = fast
        # Spot checks that the comparison covered what it says.
        for name, status in (
            ("malformed-400", b"400 Bad Request"),
            ("oversized-400", b"400 Bad Request"),
            ("/validate?timeout=10s", b"200 OK"),
        ):
            assert fast_answers[name].startswith(b"HTTP/1.1 " + status + b"\r\n"), name
        assert b"body is larger than 65536 bytes" in fast_answers["oversized-400"]
    finally:
        sock.close()
    fast_count, gunicorn_count = counts(served)
    assert fast_count == len(COMPARED)
    assert gunicorn_count >= len(COMPARED)  # and the start-up probes of /healthz


@pytest.mark.parametrize("cache", sorted(CACHES))
def test_with_a_client_ca_both_paths_answer_alike_with_and_without_a_certificate(
    opa_server: OpaServer, tmp_path: Path, cache: str
) -> None:
    """The certificate check reads the socket the fast path passes: 403 without, 200 with.
    The certified connection goes first, so with the cache its decision is kept by the time
    the anonymous connection sends the same review: it still gets the 403."""
    client_ca = pki.CertificateAuthority("client-ca")
    ca_file = tmp_path / "client-ca.crt"
    ca_file.write_bytes(client_ca.cert_pem)
    env = {"GITWARDEN_WEBHOOK_CLIENT_CA": str(ca_file), **CACHES[cache]}
    server = _webhook(opa_server, tmp_path, env)
    try:
        certified = server.tls_context()
        crt, key = client_ca.client("kube-apiserver").write(tmp_path, "client")
        certified.load_cert_chain(str(crt), str(key))
        answers = {}
        for name, context in (("certified", certified), ("anonymous", None)):
            sock, pending = connect(server, context), bytearray()
            try:
                body = _review(f"cert-{name}")
                sock.sendall(request("/validate?timeout=10s", body))
                fast = read_answer(sock, pending)
                sock.sendall(request("/validate?timeout=10s", body, extra=FALLBACK_HEADER))
                assert undated(fast) == undated(read_answer(sock, pending))
                sock.sendall(request("/validate?timeout=10s", body))  # from memory, if cached
                assert undated(fast) == undated(read_answer(sock, pending))
                answers[name] = fast
            finally:
                sock.close()
        assert answers["anonymous"].startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert b"a client certificate from the configured client CA" in answers["anonymous"]
        assert answers["certified"].startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'"uid":"cert-certified"' in answers["certified"]
    finally:
        server.stop()
    assert counts(server)[0] == 4
    assert recalled(server) == (1 if cache == "cached" else 0)  # the certified repeat only


BODY = _review("fallback")
# Each request, and how gunicorn's own answer to it starts.
FALLBACKS: dict[str, tuple[bytes, bytes]] = {
    "chunked": (
        request("/validate", b"", extra=b"Transfer-Encoding: chunked\r\n").replace(
            b"Content-Length: 0\r\n", b""
        )
        + f"{len(BODY):x}\r\n".encode()
        + BODY
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
    ),
    "two-content-lengths": (
        request("/validate", BODY, extra=f"Content-Length: {len(BODY)}\r\n".encode()),
        b"HTTP/1.1 400 Bad Request\r\n",
    ),
    "obs-fold": (
        request("/validate", BODY, extra=b"X-Folded: a\r\n b\r\n"),
        b"HTTP/1.1 400 Bad Request\r\n",
    ),
    "expect-100-continue": (
        request("/validate", BODY, extra=b"Expect: 100-continue\r\n"),
        b"HTTP/1.1 100 Continue\r\n",
    ),
    "connection-close": (
        request("/validate", BODY, extra=b"Connection: close\r\n"),
        b"HTTP/1.1 200 OK\r\n",
    ),
    # The second request, alone in the buffer once the first is answered, would be the fast
    # path's; it carries the fallback header so that the count below stays exact.
    "pipelined": (
        request("/validate", BODY) + request("/validate", BODY, extra=FALLBACK_HEADER),
        b"HTTP/1.1 200 OK\r\n",
    ),
    "http-1.0": (request("/validate", BODY, version=b"HTTP/1.0"), b"HTTP/1.0 200 OK\r\n"),
    "get": (request("/validate", BODY).replace(b"POST", b"GET", 1), b"HTTP/1.1 405 "),
    "unknown-path": (request("/validate/other", BODY), b"HTTP/1.1 404 "),
    "odd-query": (request("/validate?timeout=10s;a=b+c", BODY), b"HTTP/1.1 200 OK\r\n"),
    "nul-in-header": (
        request("/validate", BODY, extra=b"X-Nul: a\x00b\r\n"),
        b"HTTP/1.1 400 Bad Request\r\n",
    ),
    "bare-cr-in-header": (
        request("/validate", BODY, extra=b"X-Cr: a\rb\r\n"),
        b"HTTP/1.1 400 Bad Request\r\n",
    ),
}


def test_every_fallback_condition_gets_gunicorns_own_answer(served: WebhookServer) -> None:
    """Chunked, two Content-Lengths, obs-fold, Expect, Connection: close, pipelining,
    HTTP/1.0, GET, an unknown path, an odd query, NUL, a bare CR: gunicorn answers each as
    before, and the fast path takes none of them."""
    for name, (data, expected) in FALLBACKS.items():
        sock, pending = connect(served), bytearray()
        try:
            sock.sendall(data)
            answer = read_answer(sock, pending)
            assert answer.startswith(expected), (name, answer[:200])
            if name == "expect-100-continue":
                assert read_answer(sock, pending).startswith(b"HTTP/1.1 200 OK\r\n")
            if name == "pipelined":
                assert read_answer(sock, pending).startswith(b"HTTP/1.1 200 OK\r\n")
            if name in ("connection-close", "http-1.0"):
                assert b"\r\nConnection: close\r\n" in answer, name
                assert closed_by_server(sock), name
            if expected.endswith(b"400 Bad Request\r\n"):
                assert b"\r\nConnection: close\r\n" in answer, name  # gunicorn's own 400
        finally:
            sock.close()
    fast_count, gunicorn_count = counts(served)
    assert fast_count == 0
    assert gunicorn_count >= len(FALLBACKS)


def test_a_connection_keeps_alive_across_100_fast_path_requests(served: WebhookServer) -> None:
    """100 sequential reviews on one connection, each answered (keep-alive) on the fast path."""
    sock, pending = connect(served), bytearray()
    try:
        for i in range(100):
            sock.sendall(request("/validate?timeout=10s", _review(f"seq-{i}")))
            answer = read_answer(sock, pending)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), i
            assert b"\r\nConnection: keep-alive\r\n" in answer
            assert f'"uid":"seq-{i}"'.encode() in answer
    finally:
        sock.close()
    assert counts(served)[0] == 100


def test_a_stopping_worker_answers_the_request_in_flight_with_connection_close(
    opa_server: OpaServer, served: WebhookServer
) -> None:
    """SIGTERM while a fast-path review waits for OPA: it is answered, `Connection: close`,
    and the connection is closed."""
    assert opa_server.process is not None
    assert opa_server.process.popen is not None
    assert served.process is not None
    assert served.process.popen is not None
    sock, pending = connect(served), bytearray()
    try:
        sock.sendall(request("/validate", _review("warm-up")))  # a kept-alive connection first
        assert b"\r\nConnection: keep-alive\r\n" in read_answer(sock, pending)
        os.killpg(opa_server.process.popen.pid, signal.SIGSTOP)  # the review waits for OPA
        try:
            # Another object: never answered from memory, it waits for OPA with the cache too.
            sock.sendall(request("/validate?timeout=10s", _review("in-flight", "in-flight")))
            time.sleep(0.3)  # in the app by now; if not, the stopping worker reads it anyway
            os.killpg(served.process.popen.pid, signal.SIGTERM)
            time.sleep(0.3)
        finally:
            os.killpg(opa_server.process.popen.pid, signal.SIGCONT)
        answer = read_answer(sock, pending)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'"uid":"in-flight"' in answer
        assert b"\r\nConnection: close\r\n" in answer
        assert closed_by_server(sock)
    finally:
        sock.close()
    assert counts(served)[0] == 2


def test_a_client_that_stops_reading_gets_every_answer_once_it_reads(
    opa_server: OpaServer, tmp_path: Path
) -> None:
    """400 pipelined reviews from a client that reads nothing for 1.5 s: every answer arrives,
    once and in order, and the connection and the worker's one thread then serve on."""
    server = _webhook(opa_server, tmp_path, {"GITWARDEN_WEBHOOK_THREADS": "1"})
    try:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills soon
        raw.settimeout(20)
        raw.connect((LOOPBACK, server.port))
        sock = server.tls_context().wrap_socket(raw, server_hostname=LOOPBACK)
        uids = [f"unread-{i}" for i in range(400)]
        pipelined = b"".join(request("/validate", _review(u)) for u in uids)
        sender = threading.Thread(target=sock.sendall, args=(pipelined,))
        sender.start()
        time.sleep(1.5)  # not reading: the answers queue in the buffers
        pending = bytearray()
        answers = [read_answer(sock, pending) for _ in uids]
        sender.join(20)
        assert [json.loads(a.split(b"\r\n\r\n", 1)[1])["response"]["uid"] for a in answers] == uids
        assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
        sock.sendall(request("/validate", _review("after")))
        assert b'"uid":"after"' in read_answer(sock, pending)
        other = connect(server)
        other.sendall(request("/validate", _review("other")))
        assert b'"uid":"other"' in read_answer(other, bytearray())
        other.close()
        sock.close()
    finally:
        server.stop()


def test_repeats_are_answered_from_memory_on_the_loop_and_an_opa_restart_ends_that_at_once(
    tmp_path: Path,
) -> None:
    """With the cache, a repeated review is answered on the event loop (counted exactly) and
    logged as a thread logs it; once OPA restarts with new data, the very next repeat is
    decided by the new server, and its decision is the one then answered from memory."""
    config = reviews.golden()["config"]
    (tmp_path / "opa").mkdir()
    opa = OpaServer(tmp_path / "opa", {"gitwarden": {"admission": config}})
    opa.start()
    server = _webhook(opa, tmp_path, CACHES["cached"])
    try:
        sock, pending = connect(server), bytearray()
        verdicts = []
        for step in ("asked", "memory", "memory", "restarted", "new-memory"):
            if step == "restarted":
                opa.stop()
                exempt = json.loads(json.dumps(config))
                exempt["exemptions"]["usernames"] = [CASE["userInfo"]["username"]]
                opa.data = {"gitwarden": {"admission": exempt}}
                opa.start()  # same port, new process
            sock.sendall(request("/validate", _review(f"repeat-{step}")))
            answer = json.loads(read_answer(sock, pending).split(b"\r\n\r\n", 1)[1])["response"]
            assert answer["uid"] == f"repeat-{step}"
            verdicts.append(answer["allowed"])
        assert verdicts == [False, False, False, True, True]
        sock.close()
    finally:
        server.stop()
        opa.stop()
    assert recalled(server) == 3  # both repeats before the restart, one after
    log = server.log()
    assert log.count("repeat-memory update ") == 2
    assert re.search(
        r"repeat-memory update ConfigMap \S+ by \S+: denied \(not-gitops, \w+\) in [\d.]+ ms, "
        r"from the decision cache",
        log,
    )
    assert re.search(r"repeat-restarted update ConfigMap \S+ by \S+: allowed \(exempt", log)
    assert counts(server)[0] == 5


def test_answers_from_memory_wait_for_a_client_that_stops_reading(
    opa_server: OpaServer, tmp_path: Path
) -> None:
    """8,000 repeated reviews sent one by one from a client that reads nothing until it has
    sent them all or sending stalls: about 4.7 MB of answers, more than the worker's socket
    buffer takes, so a send from the event loop finds it full and a thread finishes it (seen
    once in a run instrumented for it); every answer arrives once and in order."""
    server = _webhook(opa_server, tmp_path, {"GITWARDEN_WEBHOOK_THREADS": "1", **CACHES["cached"]})
    try:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(30)
        raw.connect((LOOPBACK, server.port))
        sock = server.tls_context().wrap_socket(raw, server_hostname=LOOPBACK)
        uids = [f"unread-{i}" for i in range(8000)]
        sent = [request("/validate", _review(u)) for u in uids]

        def send_each() -> None:
            for r in sent:  # one TLS record each: each alone in the worker's buffer
                sock.sendall(r)

        sender = threading.Thread(target=send_each)
        sender.start()
        # Not reading until all is sent, or sending is stuck behind the worker's full socket.
        sender.join(4.0)
        pending = bytearray()
        answers = [read_answer(sock, pending) for _ in uids]
        sender.join(30)
        assert [json.loads(a.split(b"\r\n\r\n", 1)[1])["response"]["uid"] for a in answers] == uids
        sock.sendall(request("/validate", _review("after")))
        assert b'"uid":"after"' in read_answer(sock, pending)
        sock.close()
    finally:
        server.stop()
    assert recalled(server) > len(uids) // 2
