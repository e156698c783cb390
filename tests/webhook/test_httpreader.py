"""The shared HTTP/1.1 answer reader on a socket pair: what it reads, and what it refuses.

Each answer is written to one end of a socket pair (then, for some, that end is closed) and
read from the other; a refused one is a `BadAnswer`, which both transports turn into a
failure that drops the connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from webhook import httpreader

BODY = b'{"kind":"PartialObjectMetadata","metadata":{"name":"web"}}'


@contextlib.contextmanager
def answered(wire: bytes, *, then_close: bool = False) -> Iterator[socket.socket]:
    """The reading end of a socket pair whose other end wrote `wire` (from a thread)."""
    reading, writing = socket.socketpair()
    reading.settimeout(2)

    def write() -> None:
        # The reader may give up early (too large) and close its end: nothing more to prove.
        with contextlib.suppress(OSError):
            writing.sendall(wire)
        if then_close:
            writing.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield reading
    finally:
        reading.close()
        thread.join(timeout=5)
        writing.close()


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(body: bytes) -> bytes:
    parts = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:]))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + parts + b"0\r\nX-T: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("wire", "then_close", "will_close"),
    [
        (ok(), False, False),
        (chunked(BODY), False, False),
        (ok(extra=b"Connection: close\r\n"), False, True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY, False, True),
        (b"HTTP/1.1 200 OK\r\n\r\n" + BODY, True, True),
        (ok() + b"HTTP/1.1 200 OK\r\n", False, True),
    ],
    ids=["length", "chunked", "connection-close", "http-1.0", "until-eof", "bytes-after"],
)
def test_an_answer_is_read_whole_and_says_when_the_connection_cannot_be_kept(
    wire: bytes, then_close: bool, will_close: bool
) -> None:
    """Bytes after the answer (never asked for) make the connection unusable too."""
    with answered(wire, then_close=then_close) as sock:
        status, reason, _, body, closes = httpreader.read_answer(sock)
    assert (status, reason, body, closes) == (200, "OK", BODY, will_close)


@pytest.mark.parametrize(
    ("wire", "then_close", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", False, "status line"),
        (b"HTTP/2 200 OK\r\n\r\n", False, "status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", False, "status line"),
        (b"HTTP/1.1 2\xb20 OK\r\nContent-Length: 0\r\n\r\n", False, "status line"),
        (b"HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Length: 0\r\n\r\n", False, "header line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", False, "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n12345", False, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\n1", False, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 16777217\r\n\r\n", False, "Content-Length"),
        (ok(extra=b"Content-Encoding: gzip\r\n"), False, "compressed"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", False, "chunk not"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\n", False, "too large"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000, False, "head too large"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", True, "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", True, "closed the connection"),
        (b"", True, "closed the connection"),
    ],
    ids=[
        "another-protocol",
        "http-2",
        "short-status",
        "superscript-in-status",
        "folded-header",
        "header-without-colon",
        "signed-length",
        "superscript-length",
        "length-over-limit",
        "compressed",
        "bad-chunk-size",
        "chunk-overrun",
        "chunk-over-limit",
        "head-over-limit",
        "cut-short",
        "head-cut-short",
        "nothing",
    ],
)
def test_an_answer_it_does_not_take_is_a_bad_answer(
    wire: bytes, then_close: bool, message: str
) -> None:
    with answered(wire, then_close=then_close) as sock, pytest.raises(httpreader.BadAnswer) as exc:
        httpreader.read_answer(sock)
    assert message in str(exc.value)


def test_a_body_without_length_over_the_limit_is_refused_before_the_end() -> None:
    """The reader stops at the limit instead of buffering whatever the peer keeps sending."""
    wire = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (httpreader.BODY_LIMIT + 65536)
    with answered(wire, then_close=True) as sock, pytest.raises(httpreader.BadAnswer) as exc:
        httpreader.read_answer(sock)
    assert "too large" in str(exc.value)


def test_an_answer_that_never_completes_times_out() -> None:
    with answered(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{") as sock:
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            httpreader.read_answer(sock)
