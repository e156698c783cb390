"""The one request shape the serving worker answers without gunicorn's HTTP machinery.

Owns the strict reading of a fully buffered review POST (`parse`), the WSGI environ built
from it (`environ`) and the encoding of its answer as one buffer (`encode_answer`). The
parser accepts a strict subset of what gunicorn's own parser accepts and reads it the same
way, so a request it takes is one gunicorn would have answered identically; anything it is
not sure of (another method, version or path, an odd query, chunked or repeated framing
headers, `Expect`, `Upgrade`, a `Connection` other than keep-alive, obs-fold, control or
non-ASCII bytes, a header gunicorn refuses or maps differently, bytes after the body) is
None, and the worker hands the bytes to gunicorn untouched, which answers as it always has
(its 400s included). Pure: no sockets, no gunicorn, no decisions about a review's content.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_HEAD_END = b"\r\n\r\n"
# RFC 9110 token, without "_": gunicorn drops (or, configured so, refuses) a header whose name
# carries one, since "X_A" and "X-A" map to the same environ key; gunicorn decides those.
_FIELD = re.compile(rb"([!#$%&'*+.^`|~0-9A-Za-z-]+):([\t\x20-\x7e]*)")
# What the API server puts after the path (`?timeout=10s`): no "+", "#", ";" or "/" whose
# reading could differ between parsers.
_QUERY = re.compile(rb"[A-Za-z0-9=&._%-]*")
# Headers that change framing, the connection or how gunicorn reads the request: with any of
# these gunicorn decides. The X-Forwarded ones are gunicorn's default secure_scheme_headers,
# which it honours from 127.0.0.1 (they would change wsgi.url_scheme).
_REFUSED = frozenset(
    {
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        b"http2-settings",
        b"x-forwarded-proto",
        b"x-forwarded-protocol",
        b"x-forwarded-ssl",
    }
)
# gunicorn refuses a second one of these (RFC 9110 section 5.3 singletons).
_SINGLETONS = frozenset({b"host", b"content-type"})
_STATUS = re.compile(r"[2-5][0-9][0-9] [\x20-\x7e]*")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# gunicorn drops these from an application's answer (hop-by-hop, and its own Server/Date).
_DROPPED = frozenset({"keep-alive", "proxy-authenticate", "proxy-authorization", "te"})
_DROPPED |= {"trailers", "server", "date"}


@dataclass(frozen=True)
class Limits:
    """gunicorn's limits on a request head, as its parser applies them (0: no limit)."""

    request_line: int
    fields: int
    field_size: int
    head: int


@dataclass(frozen=True, slots=True)
class Request:
    """A review POST read in full: what the app's environ needs from it."""

    target: str
    path: str
    query: str
    content_length: str
    content_type: str | None
    body: bytes


class AnswerError(ValueError):
    """The application's answer is not one the fast path can send as gunicorn would."""


def parse(buffer: bytes | bytearray, paths: frozenset[bytes], limits: Limits) -> Request | None:
    """The request in `buffer` if it is a review POST the fast path may answer, else None."""
    end = buffer.find(_HEAD_END)
    if end < 0 or end + len(_HEAD_END) > limits.head:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    request = _request_line(lines[0], paths, limits)
    if request is None or len(lines) - 1 > limits.fields:
        return None
    target, path, query = request
    framing = _fields(lines[1:], limits)
    if framing is None:
        return None
    length, content_type = framing
    body = bytes(buffer[end + len(_HEAD_END) :])
    # Exactly the announced body: fewer bytes means it did not all fit the buffer, more means
    # a pipelined request (gunicorn reads those; the event loop's guards apply to them there).
    if int(length) != len(body):
        return None
    return Request(
        target=target.decode(),
        path=path.decode(),
        query=query.decode(),
        content_length=length.decode(),
        content_type=None if content_type is None else content_type.decode(),
        body=body,
    )


def _fields(lines: list[bytes], limits: Limits) -> tuple[bytes, bytes | None] | None:
    """The Content-Length and Content-Type of header `lines` gunicorn would read as we do."""
    length: bytes | None = None
    content_type: bytes | None = None
    seen: set[bytes] = set()
    for line in lines:
        # A line starting with SP or HT (obs-fold) fails the name; a bare CR or LF, NUL, DEL
        # or any byte above 0x7e fails the value.
        match = _FIELD.fullmatch(line)
        if match is None or (limits.field_size and len(line) + 2 > limits.field_size):
            return None
        name = match.group(1).lower()
        value = match.group(2).strip(b" \t")
        if name in _REFUSED or (name in _SINGLETONS and name in seen):
            return None
        seen.add(name)
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = value
        elif name == b"content-type":
            content_type = value
        elif name == b"connection" and value.lower() != b"keep-alive":
            return None
    return None if length is None else (length, content_type)


def _request_line(
    line: bytes, paths: frozenset[bytes], limits: Limits
) -> tuple[bytes, bytes, bytes] | None:
    if limits.request_line and len(line) > limits.request_line:
        return None
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    target = parts[1]
    path, _, query = target.partition(b"?")
    if path not in paths or not _QUERY.fullmatch(query):
        return None
    return target, path, query


def environ(
    request: Request,
    *,
    base: Mapping[str, Any],
    sock: Any,
    client: tuple[str, int],
    server: tuple[str, int],
    scheme: str,
) -> dict[str, Any]:
    """The WSGI environ for `request`: gunicorn's values for every key the app reads.

    `base` holds the per-worker keys (gunicorn's own `base_environ`); the request's other
    headers are left out: the review routes read only these.
    """
    env = dict(base)
    env.update(
        {
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.multithread": True,
            "wsgi.url_scheme": scheme,
            "gunicorn.socket": sock,
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query,
            "RAW_URI": request.target,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": request.content_length,
            "REMOTE_ADDR": client[0],
            "REMOTE_PORT": str(client[1]),
            "SERVER_NAME": server[0],
            "SERVER_PORT": str(server[1]),
        }
    )
    if request.content_type is not None:
        env["CONTENT_TYPE"] = request.content_type
    return env


def call(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run the WSGI app to completion: its status, headers and whole body."""
    answer: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and answer:
            raise exc_info[1].with_traceback(exc_info[2])
        answer[:] = [status, headers]
        return _no_write

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if not answer:
        raise AnswerError("the app did not start a response")
    return answer[0], answer[1], body


def _no_write(data: bytes) -> None:
    # The legacy write() callable: the review routes never use it, and supporting it would
    # mean a second send.
    raise AnswerError("write() is not supported on the fast path")


def encode_answer(
    status: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    server: str,
    date: str,
    close: bool,
) -> bytes:
    """The whole answer as gunicorn's Response writes it, for one `sendall`.

    Only a plain answer with a Content-Length matching its body qualifies (what the review
    routes give); anything else raises AnswerError, and the worker closes the connection
    rather than send something gunicorn would have framed differently.
    """
    if not _STATUS.fullmatch(status) or status[:3] in ("204", "304"):
        raise AnswerError(f"status {status[:3]!r} is not a plain answer")
    lines = [
        f"HTTP/1.1 {status}\r\nServer: {server}\r\nDate: {date}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n"
    ]
    length = None
    for name, raw in headers:
        if not _FIELD.fullmatch(name.encode("latin-1") + b":") or not _HEADER_VALUE.fullmatch(raw):
            raise AnswerError(f"header {name!r} cannot be sent as it is")
        lname = name.lower()
        value = raw.strip(" \t")
        if lname in ("connection", "upgrade", "transfer-encoding"):
            raise AnswerError(f"header {name!r} is not for the fast path")
        if lname in _DROPPED:
            continue
        if lname == "content-length":
            length = value
        lines.append(f"{name}: {value}\r\n")
    if length is None or not length.isdigit() or int(length) != len(body):
        raise AnswerError("the answer's Content-Length is missing or does not match its body")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body
