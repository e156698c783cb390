"""The health, metrics and push endpoints over real sockets on 127.0.0.1.

Requests are sent by `http.client` and, where a client must misbehave (no length, a slow
drip, a flood), by a raw socket. Signatures are computed here from the secret and the body.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import parser

from reconciler import controlconfig, endpoints, httpserve, metrics, pushauth

SECRET = b"push-secret-for-tests"
TOKEN = b"gitlab-token-for-tests"
BODY = b'{"ref":"refs/heads/main"}'
MAX_BODY = 4096


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass
class Probe:
    """What the endpoints are told, and what they did."""

    health: endpoints.Health = field(
        default_factory=lambda: endpoints.Health(live=True, ready=True, detail="leading")
    )
    pushes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> endpoints.Health:
        return self.health

    def on_push(self) -> None:
        with self.lock:
            self.pushes += 1


@dataclass
class Running:
    probe: Probe
    metrics: metrics.Metrics
    served: endpoints.Endpoints

    def get(self, path: str) -> tuple[int, str, bytes]:
        return request(self.served.port, "GET", path)

    def push(self, body: bytes, headers: dict[str, str], path: str = "/hook") -> int:
        port = self.served.push_port
        assert port is not None
        return request(port, "POST", path, body, headers)[0]


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read()
    finally:
        conn.close()


@pytest.fixture
def running() -> Iterator[Running]:
    probe, registry = Probe(), metrics.Metrics()
    push = controlconfig.PushConfig(
        listen="127.0.0.1:0",
        hmac_secret_file=None,
        hmac_header="X-Sig-256",
        max_body_bytes=MAX_BODY,
    )
    served = endpoints.Endpoints(
        controlconfig.ServerConfig(listen="127.0.0.1:0"),
        push,
        pushauth.Secrets(gitlab=TOKEN, hmac=SECRET, hmac_header="X-Sig-256"),
        registry,
        probe.current,
        probe.on_push,
    ).start()
    try:
        yield Running(probe, registry, served)
    finally:
        served.stop()


def test_health_and_readiness_follow_the_callback(running: Running) -> None:
    assert running.get("/healthz")[0] == 200
    status, _, body = running.get("/readyz")
    assert (status, body) == (200, b"ok: leading\n")
    running.probe.health = endpoints.Health(live=True, ready=False, detail="API server away")
    assert running.get("/healthz")[0] == 200
    status, _, body = running.get("/readyz")
    assert (status, body) == (503, b"not ok: API server away\n")
    running.probe.health = endpoints.Health(live=False, ready=True, detail="loop stuck")
    assert running.get("/healthz")[0] == 503
    assert running.get("/readyz")[0] == 503  # not live is never ready
    assert running.get("/nothing")[0] == 404


def test_a_failing_health_callback_is_a_503_not_a_500(running: Running) -> None:
    def broken() -> endpoints.Health:
        raise RuntimeError("boom")

    served = endpoints.Endpoints(
        controlconfig.ServerConfig(listen="127.0.0.1:0"),
        controlconfig.PushConfig(),
        None,
        running.metrics,
        broken,
        running.probe.on_push,
    ).start()
    try:
        assert request(served.port, "GET", "/healthz")[0] == 503
        assert served.push_port is None
    finally:
        served.stop()


def test_metrics_are_prometheus_text(running: Running) -> None:
    running.metrics.leading(True)
    status, content_type, body = running.get("/metrics")
    assert status == 200
    assert content_type == metrics.CONTENT_TYPE
    families = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    assert families["gitwarden_leader"].samples[0].value == 1


def test_a_signed_push_is_accepted_and_wakes_the_loop_once(running: Running) -> None:
    assert running.push(BODY, {"X-Sig-256": sign(BODY)}) == 202
    assert running.probe.pushes == 1
    assert running.push(BODY, {"X-Gitlab-Token": TOKEN.decode()}) == 202
    assert running.probe.pushes == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Sig-256": sign(BODY, b"wrong")},
        {"X-Sig-256": sign(BODY + b"x")},
        {"X-Sig-256": sign(BODY)[:-1]},
        {"X-Gitlab-Token": "wrong"},
        {"X-Hub-Signature-256": sign(BODY)},  # GitHub is not configured on this receiver
    ],
)
def test_a_bad_or_missing_signature_gets_401_and_triggers_nothing(
    running: Running, headers: dict[str, str]
) -> None:
    assert running.push(BODY, headers) == 401
    assert running.probe.pushes == 0


def test_only_post_on_hook(running: Running) -> None:
    port = running.served.push_port
    assert port is not None
    assert request(port, "GET", "/hook")[0] == 405
    assert request(port, "PUT", "/hook", BODY, {"X-Sig-256": sign(BODY)})[0] == 405
    assert running.push(BODY, {"X-Sig-256": sign(BODY)}, path="/other") == 404
    # The status routes are not on the push listener, nor the hook on the status listener.
    assert request(port, "GET", "/metrics")[0] == 405
    assert request(running.served.port, "POST", "/hook", BODY, {"X-Sig-256": sign(BODY)})[0] == 501
    assert running.probe.pushes == 0


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` as is on a fresh connection and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_without_content_length_gets_411(running: Running) -> None:
    port = running.served.push_port
    assert port is not None
    head = f"POST /hook HTTP/1.1\r\nHost: x\r\nX-Sig-256: {sign(BODY)}\r\n"
    answer = raw(port, (head + "Connection: close\r\n\r\n").encode() + BODY)
    assert answer.startswith(b"HTTP/1.0 411")
    chunked = head + "Transfer-Encoding: chunked\r\nContent-Length: 25\r\n\r\n"
    assert raw(port, chunked.encode() + BODY).startswith(b"HTTP/1.0 411")
    twice = head + f"Content-Length: {len(BODY)}\r\nContent-Length: {len(BODY)}\r\n\r\n"
    assert raw(port, twice.encode() + BODY).startswith(b"HTTP/1.0 411")
    bad = head + "Content-Length: \xb2\r\n\r\n"  # a Latin-1 digit that int() would refuse
    assert raw(port, bad.encode("latin-1")).startswith(b"HTTP/1.0 400")
    assert running.probe.pushes == 0


def test_a_body_over_the_limit_gets_413_before_it_is_read(running: Running) -> None:
    port = running.served.push_port
    assert port is not None
    big = b"x" * (MAX_BODY + 1)
    # Only the headers are sent: the answer comes without the server waiting for the body.
    head = f"POST /hook HTTP/1.1\r\nContent-Length: {len(big)}\r\nX-Sig-256: {sign(big)}\r\n\r\n"
    started = time.monotonic()
    answer = raw(port, head.encode(), timeout=5)
    assert answer.startswith(b"HTTP/1.0 413")
    assert time.monotonic() - started < httpserve.READ_TIMEOUT
    exactly = b"y" * MAX_BODY
    assert running.push(exactly, {"X-Sig-256": sign(exactly)}) == 202
    assert running.probe.pushes == 1


def test_a_short_body_is_refused(running: Running) -> None:
    port = running.served.push_port
    assert port is not None
    length = len(BODY) + 10
    head = f"POST /hook HTTP/1.1\r\nContent-Length: {length}\r\nX-Sig-256: {sign(BODY)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + BODY)
        sock.shutdown(socket.SHUT_WR)  # the client stops short of its Content-Length
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.0 400")
    assert running.probe.pushes == 0


def test_the_log_never_holds_a_body_or_a_header_value(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"secret-looking":"body-canary"}'
    with caplog.at_level(logging.DEBUG):
        running.push(body, {"X-Sig-256": sign(body, b"header-canary")})
        running.push(body, {"X-Sig-256": sign(body)})
        running.push(body, {"X-Gitlab-Token": "token-canary"})
    text = caplog.text
    assert "push refused" in text
    assert "push verified" in text
    for canary in ("body-canary", "header-canary", "token-canary", sign(body)[7:], SECRET.decode()):
        assert canary not in text
    assert running.probe.pushes == 1


def test_a_failing_push_callback_is_a_503(running: Running) -> None:
    def broken() -> None:
        raise RuntimeError("loop gone")

    served = endpoints.Endpoints(
        controlconfig.ServerConfig(listen="127.0.0.1:0"),
        controlconfig.PushConfig(listen="127.0.0.1:0", gitlab_token_file=None),
        pushauth.Secrets(gitlab=TOKEN),
        running.metrics,
        running.probe.current,
        broken,
    ).start()
    try:
        assert served.push_port is not None
        status = request(
            served.push_port, "POST", "/hook", BODY, {"X-Gitlab-Token": TOKEN.decode()}
        )
        assert status[0] == 503
    finally:
        served.stop()


def test_a_push_listener_without_secrets_is_refused() -> None:
    with pytest.raises(endpoints.EndpointError, match="no push secret"):
        endpoints.Endpoints(
            controlconfig.ServerConfig(listen="127.0.0.1:0"),
            controlconfig.PushConfig(listen="127.0.0.1:0"),
            pushauth.Secrets(),
            metrics.Metrics(),
            Probe().current,
            Probe().on_push,
        )


class Echo(httpserve.Handler):
    def do_GET(self) -> None:
        self.reply(200, b"hello\n")


def test_a_slow_client_is_cut_off_at_the_deadline() -> None:
    """A client that drips a byte at a time, each within the read timeout, is still cut off."""
    with httpserve.Listener("127.0.0.1", 0, Echo, name="t", read_timeout=1.0, deadline=1.5) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            started = time.monotonic()
            closed = False
            for byte in b"GET / HTTP/1.0\r\nX-Drip: " + b"a" * 100:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.3)  # under the read timeout, so only the deadline can end it
                if time.monotonic() - started > 4:
                    break
            if not closed:
                closed = sock.recv(1024) == b""
        assert closed
        assert time.monotonic() - started < 4
        # The listener still serves others.
        assert request(srv.port, "GET", "/")[0] == 200


def test_an_idle_connection_is_closed_after_the_read_timeout() -> None:
    with (
        httpserve.Listener("127.0.0.1", 0, Echo, name="t", read_timeout=0.5, deadline=30) as srv,
        socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock,
    ):
        started = time.monotonic()
        assert sock.recv(1024) == b""  # nothing sent: the server gives up and closes
        assert time.monotonic() - started < 5


def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    with httpserve.Listener(
        "127.0.0.1", 0, Echo, name="t", read_timeout=5, deadline=10, max_connections=2
    ) as srv:
        holders = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(2)]
        try:
            time.sleep(0.3)  # both accepted and holding a slot
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as extra:
                assert extra.recv(1024) == b""  # closed without an answer
        finally:
            for sock in holders:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # slots come back once the holders are gone
            try:
                if request(srv.port, "GET", "/")[0] == 200:
                    break
            except (ConnectionError, http.client.RemoteDisconnected):
                pass
            assert time.monotonic() < deadline, "slots were not given back"
            time.sleep(0.1)


def test_the_access_log_drops_the_query_string(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="gitwarden.http"):
        running.get("/readyz?token=query-canary")
        answer = raw(running.served.port, b"GET /x?token=line-canary HTTP/9.9 extra\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400")
    assert "/readyz" in caplog.text
    assert "(400)" in caplog.text
    assert "query-canary" not in caplog.text
    assert "line-canary" not in caplog.text
