"""Reading one HTTP/1.1 answer from a socket: the small, strict reader both transports share.

Owns `read_answer` and its limits. It takes the answers the webhook's two peers give (OPA's
decisions, the API server's metadata reads): a status line, headers, and a body of
`Content-Length` bytes, chunked, or ending with the connection. Anything else (another
protocol, a malformed line, a compressed body, a head over 64 KiB or a body over 16 MiB, a
connection closed early) raises `BadAnswer`, and the caller drops the connection and fails
closed. It never writes, retries or decides what a status means; it reads plain and TLS
sockets alike (`recv` only), and a buffer an event loop filled (`Receiver`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

HEAD_LIMIT = 64 * 1024
BODY_LIMIT = 16 * 1024 * 1024
_HEAD_END = b"\r\n\r\n"


class BadAnswer(Exception):
    """The answer is not HTTP/1.x as this reader takes it."""


class Receiver(Protocol):
    """What the reader reads from: a socket's `recv` (a plain or TLS socket, or a buffer)."""

    def recv(self, size: int, /) -> bytes:
        """Up to `size` bytes; b"" once the peer has closed."""
        ...


# Answers that never have a body: 204 No Content and 304 Not Modified (an interim 1xx is not
# expected from either server and is refused by the callers as an unusable status).
_NO_BODY = frozenset({204, 304})


def read_answer(sock: Receiver) -> tuple[int, str, list[tuple[str, str]], bytes, bool]:
    """(status, reason, headers, body, whether the connection must close) of one answer."""
    buf = bytearray()
    while (end := buf.find(_HEAD_END)) < 0:
        if len(buf) > HEAD_LIMIT:
            raise BadAnswer("answer head too large")
        _receive(sock, buf)
    code, reason, version, headers = _head(bytes(buf[:end]).decode("latin-1"))
    fields = {name.lower(): value for name, value in headers}
    if fields.get("content-encoding", "identity").lower() != "identity":
        raise BadAnswer("the answer has a compressed body")
    connection = fields.get("connection", "").lower()
    will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if code in _NO_BODY:  # whatever its headers say (RFC 9112 6.3): nothing to wait for
        content, leftover, ends = b"", buf[end + len(_HEAD_END) :], False
    else:
        content, leftover, ends = _body(sock, fields, buf[end + len(_HEAD_END) :])
    # Bytes after the answer were never asked for: the connection's state is unknown.
    return code, reason, headers, content, will_close or ends or bool(leftover)


def _head(head: str) -> tuple[int, str, str, list[tuple[str, str]]]:
    """(status, reason, HTTP version, headers) of an answer's head."""
    status_line, *lines = head.split("\r\n")
    version, _, status_reason = status_line.partition(" ")
    code, _, reason = status_reason.partition(" ")
    # isascii too: "²" (latin-1 0xB2) is a digit to isdigit() and not to int().
    if version not in ("HTTP/1.1", "HTTP/1.0") or not (
        len(code) == 3 and code.isascii() and code.isdigit()
    ):
        raise BadAnswer("not an HTTP/1.x status line")
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadAnswer("malformed header line")
        headers.append((name, value.strip()))
    return int(code), reason, version, headers


def _body(
    sock: Receiver, fields: Mapping[str, str], rest: bytearray
) -> tuple[bytes, bytearray, bool]:
    """(body, bytes after it, whether the body ended with the connection)."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return *_dechunk(sock, rest), False
    if "content-length" in fields:
        length = fields["content-length"]
        if not (length.isascii() and length.isdigit() and int(length) <= BODY_LIMIT):
            raise BadAnswer("unusable Content-Length")
        while len(rest) < int(length):
            _receive(sock, rest)
        return bytes(rest[: int(length)]), rest[int(length) :], False
    while _receive(sock, rest, eof_ok=True):  # no length: the body ends with the connection
        if len(rest) > BODY_LIMIT:
            raise BadAnswer("answer body too large")
    return bytes(rest), bytearray(), True


def _dechunk(sock: Receiver, buf: bytearray) -> tuple[bytes, bytearray]:
    """A chunked body (and whatever followed it) from `buf` and the socket."""
    body = bytearray()
    while True:
        while (eol := buf.find(b"\r\n")) < 0:
            if len(buf) > HEAD_LIMIT:
                raise BadAnswer("chunk size line too long")
            _receive(sock, buf)
        size_text = bytes(buf[:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadAnswer("malformed chunk size") from None
        if size < 0 or len(body) + size > BODY_LIMIT:
            raise BadAnswer("answer body too large")
        del buf[: eol + 2]
        if size == 0:  # the last chunk; then optional trailers and an empty line
            while (end := buf.find(b"\r\n")) != 0:
                if end < 0:
                    _receive(sock, buf)
                    continue
                del buf[: end + 2]  # a trailer: ignored
            return bytes(body), buf[2:]
        while len(buf) < size + 2:
            _receive(sock, buf)
        if buf[size : size + 2] != b"\r\n":
            raise BadAnswer("chunk not terminated")
        body += buf[:size]
        del buf[: size + 2]


def _receive(sock: Receiver, buf: bytearray, *, eof_ok: bool = False) -> bool:
    chunk = sock.recv(65536)
    if not chunk:
        if eof_ok:
            return False
        raise BadAnswer("the server closed the connection before its answer was complete")
    buf += chunk
    return True
