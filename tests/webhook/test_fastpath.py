"""The fast path's strict parser and answer encoding, with gunicorn's own parser as oracle.

Whatever the fast path takes, gunicorn must read the same way (method, path, query, framing,
body) and find nothing after it; everything it is not sure of is refused (None), so the
worker hands it to gunicorn. Thousands of seeded byte-level mutations of a real request
check the first rule where hand-written cases run out.
"""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from gunicorn import config, http

from tests.webhook.fakes import FakeEngine
from webhook import app as app_mod
from webhook import fastpath, metrics, settings

PATHS = frozenset(p.encode() for p in app_mod.REVIEW_PATHS)
LIMITS = fastpath.Limits(request_line=8190, fields=100, field_size=8190, head=64 * 1024)
BODY = b'{"kind":"AdmissionReview"}'
HEAD = (
    b"POST /validate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"
    b"Accept: application/json, */*\r\nContent-Type: application/json\r\n"
    b"User-Agent: kube-apiserver-admission\r\nContent-Length: 26\r\n"
)


def _with(extra: bytes = b"", head: bytes = HEAD, body: bytes = BODY) -> bytes:
    return head + extra + b"\r\n" + body


def _gunicorn(data: bytes) -> tuple[Any, ...] | None:
    """How gunicorn's parser reads `data`: None if it refuses it or more bytes follow."""
    cfg = config.Config()
    try:
        parser = http.get_parser(cfg, iter([data]), ("127.0.0.1", 5000))
        req = next(parser)
        body = req.body.read()
        rest = parser.unreader.read()
    except Exception:  # any refusal of gunicorn's counts as "refused"
        return None
    if rest or req.should_close():
        return None
    headers = dict(req.headers)
    return (
        req.method,
        req.path,
        req.query,
        headers["CONTENT-LENGTH"],
        headers.get("CONTENT-TYPE"),
        body,
    )


def test_the_api_servers_request_is_taken_as_gunicorn_reads_it() -> None:
    request = fastpath.parse(_with(), PATHS, LIMITS)
    assert request is not None
    assert (request.path, request.query, request.target) == (
        "/validate",
        "timeout=10s",
        "/validate?timeout=10s",
    )
    assert (request.content_length, request.content_type, request.body) == (
        "26",
        "application/json",
        BODY,
    )
    assert _gunicorn(_with()) == (
        "POST",
        "/validate",
        "timeout=10s",
        "26",
        "application/json",
        BODY,
    )


@pytest.mark.parametrize("path", app_mod.REVIEW_PATHS)
def test_every_review_path_with_and_without_a_query_is_taken(path: str) -> None:
    for target in (path, path + "?timeout=10s"):
        head = HEAD.replace(b"/validate?timeout=10s", target.encode())
        request = fastpath.parse(_with(b"Connection: Keep-Alive\r\n", head), PATHS, LIMITS)
        assert request is not None
        assert request.path == path


REFUSED: dict[str, bytes] = {
    "lowercase-method": _with().replace(b"POST", b"post", 1),
    "get": _with().replace(b"POST", b"GET", 1),
    "double-space": _with().replace(b"POST ", b"POST  ", 1),
    "http-1.0": _with().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "trailing-slash": _with().replace(b"/validate?", b"/validate/?", 1),
    "encoded-slash": _with().replace(b"/validate?", b"/validate%2Fparent?", 1),
    "absolute-form": _with().replace(b"/validate?", b"https://x/validate?", 1),
    "query-plus": _with().replace(b"10s", b"10s+1", 1),
    "query-semicolon": _with().replace(b"10s", b"10s;a", 1),
    "query-fragment": _with().replace(b"10s", b"10s#a", 1),
    "query-slash": _with().replace(b"10s", b"10s/..", 1),
    "leading-crlf": b"\r\n" + _with(),
    "underscore-name": _with(b"X_Forwarded_For: 1.2.3.4\r\n"),
    "space-before-colon": _with(b"X-A : b\r\n"),
    "obs-fold": _with(b"X-A: b\r\n c\r\n"),
    "nul": _with(b"X-A: b\x00c\r\n"),
    "bare-cr": _with(b"X-A: b\rc\r\n"),
    "bare-lf": _with(b"X-A: b\nc\r\n"),
    "del": _with(b"X-A: b\x7f\r\n"),
    "obs-text": _with(b"X-A: caf\xe9\r\n"),
    "two-lengths": _with(b"Content-Length: 26\r\n"),
    "plus-length": _with(head=HEAD.replace(b"Length: 26", b"Length: +26")),
    "empty-length": _with(head=HEAD.replace(b"Length: 26", b"Length: ")),
    "no-length": _with(head=HEAD.replace(b"Content-Length: 26\r\n", b"")),
    "chunked": _with(b"Transfer-Encoding: chunked\r\n"),
    "expect": _with(b"Expect: 100-continue\r\n"),
    "upgrade": _with(b"Upgrade: h2c\r\n"),
    "forwarded-proto": _with(b"X-Forwarded-Proto: http\r\n"),
    "two-hosts": _with(b"Host: elsewhere\r\n"),
    "two-content-types": _with(b"Content-Type: text/plain\r\n"),
    "connection-close": _with(b"Connection: close\r\n"),
    "connection-list": _with(b"Connection: keep-alive, close\r\n"),
    "pipelined": _with() + _with(),
    "short-body": _with(body=BODY[:-1]),
    "long-body": _with(body=BODY + b" "),
    "no-head-end": _with().replace(b"\r\n\r\n", b"\r\n"),
    "too-many-fields": _with(b"X-A: b\r\n" * 100),
    "long-field": _with(b"X-A: " + b"b" * 8184 + b"\r\n"),
    "long-request-line": _with().replace(b"10s", b"10s&a=" + b"b" * 8190, 1),
    "head-over-the-buffer": _with(b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1200) for i in range(60))),
}


@pytest.mark.parametrize("name", list(REFUSED), ids=list(REFUSED))
def test_anything_the_fast_path_is_not_sure_of_goes_to_gunicorn(name: str) -> None:
    assert fastpath.parse(REFUSED[name], PATHS, LIMITS) is None


def test_the_limits_are_gunicorns_to_the_byte() -> None:
    """At exactly gunicorn's limits the request is taken (gunicorn takes it too)."""
    at_limits = [
        _with(b"X-A: b\r\n" * (100 - 5)),  # HEAD has 5 fields
        _with(b"X-A: " + b"b" * 8183 + b"\r\n"),
    ]
    for data in at_limits:
        assert fastpath.parse(data, PATHS, LIMITS) is not None
        assert _gunicorn(data) is not None


def test_whatever_the_fast_path_takes_gunicorn_reads_the_same_way() -> None:
    """5,000 seeded mutations (a byte inserted, replaced or deleted, a line doubled)."""
    rng = random.Random(14)  # noqa: S311 - a reproducible test corpus, not secrets
    alphabet = b" \t\r\n\x00\x7f\x80:;,?#%+/_-=&0123456789aAzZ"
    taken = 0
    for _ in range(5000):
        data = bytearray(_with(b"Connection: keep-alive\r\n"))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            match rng.randrange(4):
                case 0:
                    data.insert(at, rng.choice(alphabet))
                case 1:
                    data[at] = rng.choice(alphabet)
                case 2:
                    del data[at]
                case _:
                    start = data.rfind(b"\r\n", 0, at) + 2
                    end = data.find(b"\r\n", at)
                    if 2 <= start < end:
                        data[start:start] = data[start:end] + b"\r\n"
        request = fastpath.parse(bytes(data), PATHS, LIMITS)
        if request is None:
            continue
        taken += 1
        seen = (
            "POST",
            request.path,
            request.query,
            request.content_length,
            request.content_type,
            request.body,
        )
        assert _gunicorn(bytes(data)) == seen, bytes(data)
    assert taken > 100  # the mutations left enough requests intact to check something


def test_the_answer_is_laid_out_as_gunicorns_response_writes_it() -> None:
    answer = fastpath.encode_answer(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", "2"), ("Server", "x")],
        b"{}",
        server="gunicorn",
        date="Wed, 02 Dec 2026 04:00:00 GMT",
        close=False,
    )
    assert answer == (
        b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Wed, 02 Dec 2026 04:00:00 GMT\r\n"
        b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"\r\n{}"
    )


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        ("200 OK", [("Content-Type", "application/json")], b"{}"),  # no length: chunked
        ("200 OK", [("Content-Length", "3")], b"{}"),
        ("204 No Content", [("Content-Length", "0")], b""),
        ("200 OK", [("Content-Length", "2"), ("Connection", "upgrade")], b"{}"),
        ("200 OK", [("Content-Length", "2"), ("X-A", "b\r\nX-B: c")], b"{}"),
        ("OK", [("Content-Length", "2")], b"{}"),
    ],
    ids=["no-length", "wrong-length", "204", "connection", "header-injection", "bad-status"],
)
def test_an_answer_gunicorn_would_frame_otherwise_is_refused(
    status: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    with pytest.raises(fastpath.AnswerError):
        fastpath.encode_answer(status, headers, body, server="gunicorn", date="-", close=True)


def test_an_app_that_never_starts_a_response_is_an_error() -> None:
    with pytest.raises(fastpath.AnswerError):
        fastpath.call(lambda environ, start_response: [b"x"], {})


def test_the_review_paths_are_the_apps_review_routes() -> None:
    """REVIEW_PATHS names exactly the POST routes create_app registers for reviews."""
    app = app_mod.create_app(
        settings.WebhookSettings(), engine=FakeEngine(), metrics=metrics.Metrics()
    )
    routes = {r.rule for r in app.url_map.iter_rules() if r.endpoint.startswith("review ")}
    assert routes == set(app_mod.REVIEW_PATHS)


def test_the_environ_carries_what_the_review_routes_and_werkzeug_read() -> None:
    request = fastpath.parse(_with(), PATHS, LIMITS)
    assert request is not None
    sock = object()
    env = fastpath.environ(
        request,
        base={"wsgi.version": (1, 0), "wsgi.input_terminated": True},
        sock=sock,
        client=("127.0.0.1", 5000),
        server=("127.0.0.1", 8443),
        scheme="https",
    )
    assert env["gunicorn.socket"] is sock
    assert isinstance(env["wsgi.input"], io.BytesIO)
    assert env["wsgi.input"].read() == BODY
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"]) == (
        "POST",
        "/validate",
        "timeout=10s",
    )
    assert (env["CONTENT_LENGTH"], env["CONTENT_TYPE"]) == ("26", "application/json")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", "5000")
    assert env["wsgi.url_scheme"] == "https"
