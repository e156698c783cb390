"""The HTTP transport under opa-python-client's session: one kept-alive connection, no pool.

Owns `DirectSession`, the requests session each thread's OPA client sends through, and
`KeepAliveAdapter`, the one persistent plain-HTTP/1.1 connection to the OPA sidecar it sends
over. opa-python-client still builds every query (`session.post(url, json=...)`) and reads
every answer (`raise_for_status()`, `json()` of a `requests.Response`); between the two, a
request is written as one buffer in one `sendall` and its answer read with a small parser of
the one kind of answer OPA gives (status line, headers, a body of `Content-Length` bytes or
chunked). It exists because requests' preparation, urllib3's pool and http.client's
header parsing (the email package) cost several times the CPU of the exchange itself, and
http.client writes the head and the body in two sends (two wake-ups of OPA).

It never retries: a failure to connect, send or read, or an answer it cannot parse, raises
`requests.ConnectionError` or `requests.Timeout` at once (the engine answers fail-closed) and
the connection is dropped, so the next decision starts a fresh one. A kept-alive connection
that OPA closed while idle is noticed before a request is written (the socket reads as
ready), and replaced; a request is never sent twice. Answers must be uncompressed (it asks
for `identity`), their head under 64 KiB and their body under 16 MiB.
"""

from __future__ import annotations

import io
import re
import select
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson
import requests
from requests import adapters, structures

from webhook import httpreader

# The answer reader is shared with the parent lookups' transport (webhook/httpreader.py).
_BadAnswer = httpreader.BadAnswer
_read_answer = httpreader.read_answer

# What a header name or value, or a request target, may never hold: it would end the line.
_BREAKS_A_LINE = re.compile(r"[\r\n\x00]")


class DirectSession(requests.Session):
    """A session that sends what the OPA client asks, as it asks, over one connection.

    It keeps the session's headers (the client's bearer token, if any) and the per-call
    timeout, and leaves out what a local policy engine never needs and an attacker could
    use: no cookies kept or sent, no redirects followed, no auth or proxies from the
    environment. Every URL goes to the one OPA address the session was made for.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.trust_env = False
        self.adapter = KeepAliveAdapter(host, port)
        self.mount("http://", self.adapter)
        self._targets: dict[str, str] = {}

    def request(  # type: ignore[override]  # noqa: PLR0917 - requests' own signature, cut short
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        json: Any = None,
        **ignored: Any,
    ) -> requests.Response:
        verb = method.decode() if isinstance(method, bytes) else method
        address = url.decode() if isinstance(url, bytes) else url
        target = self._target(address, params)
        if json is not None:
            # UTF-8 JSON as requests would send it, by orjson (a fifteenth of the standard
            # library's CPU for a policy input). The one difference: a float NaN would be sent as
            # null, not refused; a policy input holds strings, booleans, lists and maps only.
            try:
                body = orjson.dumps(json)
            except orjson.JSONEncodeError as exc:
                raise requests.exceptions.InvalidJSONError(exc) from exc
            content_type: str | None = "application/json"
        else:
            body = data.encode() if isinstance(data, str) else bytes(data or b"")
            content_type = None
        fields = {**self.headers, **(headers or {})}
        fields["Accept-Encoding"] = "identity"  # the reader below takes no compressed body
        if content_type and not any(k.lower() == "content-type" for k in fields):
            fields["Content-Type"] = content_type
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        return self.adapter.exchange(verb.upper(), target, fields, body, seconds, address)

    def _target(self, url: str, params: Any) -> str:
        """The request target (path and query) of `url`, checked once per distinct URL."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(params)}"
        found = self._targets.get(url)
        if found is None:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme != "http":
                raise requests.exceptions.InvalidURL(f"not an http URL: {url!r}")
            found = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if _BREAKS_A_LINE.search(found) or " " in found:
                raise requests.exceptions.InvalidURL("the URL's path holds a space or a line break")
            if len(self._targets) < 64:  # a handful of URLs in practice: bounded regardless
                self._targets[url] = found
        return found


class KeepAliveAdapter(adapters.BaseAdapter):
    """One persistent plain-HTTP/1.1 connection to `host:port`; no pool, no retries."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._host, self._port = host, port
        self._sock: socket.socket | None = None
        self._poller: select.poll | None = None
        self.connections = 0
        """How many connections this adapter has opened: a new number is a new connection."""
        self._heads: dict[tuple[str, str, tuple[tuple[str, str | bytes], ...]], bytes] = {}

    def send(  # noqa: PLR0917 - the signature requests calls adapters with
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """requests' adapter entry point, for a request prepared elsewhere."""
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        body = request.body.encode() if isinstance(request.body, str) else request.body or b""
        return self.exchange(
            request.method or "POST",
            request.path_url,
            dict(request.headers),
            body,
            seconds,
            request.url or "",
        )

    def exchange(  # noqa: PLR0917 - one request's parts, named at the one call
        self,
        method: str,
        target: str,
        fields: Mapping[str, str | bytes],
        body: bytes,
        timeout: float | None,
        url: str,
    ) -> requests.Response:
        """Write one request in one send, read its whole answer; no retry on any failure."""
        key = (method, target, tuple(fields.items()))
        head = self._heads.get(key)
        if head is None:  # a handful of distinct heads in practice: checked once each
            head = _request_head(method, target, self._host, self._port, fields)
            if len(self._heads) < 64:
                self._heads[key] = head
        wire = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        try:
            sock = self._connection(timeout)
            sock.sendall(wire)
            status, reason, headers, content, will_close = _read_answer(sock)
        except TimeoutError as exc:
            self.close()
            raise requests.Timeout(exc) from exc
        except (OSError, _BadAnswer) as exc:
            self.close()
            raise requests.ConnectionError(exc) from exc
        if will_close:
            self.close()
        response = _Answer()
        response.status_code = status
        response.reason = reason
        response.headers = structures.CaseInsensitiveDict(headers)
        response.url = url
        # A file-like `raw` is how requests reads any adapter's body (`content`, `json()`).
        response.raw = io.BytesIO(content)
        response.encoding = "utf-8"
        return response

    def _connection(self, timeout: float | None) -> socket.socket:
        sock = self._sock
        if sock is not None and self._poller is not None and self._poller.poll(0):
            # Idle, yet readable: OPA closed it (or sent bytes nobody asked for). Replace it
            # before writing, so no request is ever lost to a stale connection or resent.
            self.close()
            sock = None
        if sock is None:
            sock = socket.create_connection((self._host, self._port), timeout=timeout)
            # The request goes out in one segment: no Nagle delay for the answer's ACK either.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            self._sock = sock
            self.connections += 1
        elif sock.gettimeout() != timeout:  # setting it costs system calls: only on a change
            sock.settimeout(timeout)
        return sock

    def still_open(self) -> bool:
        """Whether the kept-alive connection is open and idle (one poll, no bytes moved).

        False when there is none or OPA closed it (it reads as ready while idle): it is then
        dropped, as the next request would drop it.
        """
        if self._sock is None or self._poller is None:
            return False
        if self._poller.poll(0):
            self.close()
            return False
        return True

    def __del__(self) -> None:
        # An engine dropped without close() (a test's, a worker's at exit) owns no socket.
        self.close()

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        sock, self._sock, self._poller = self._sock, None, None
        if sock is not None:
            sock.close()


class _Answer(requests.Response):
    """A requests Response whose `json()` is orjson's (the body is OPA's, in memory)."""

    def json(self, **kwargs: Any) -> Any:
        """The body's JSON value; a body that is not JSON raises ValueError, as requests' does."""
        return orjson.loads(self.content)


def _request_head(
    method: str, target: str, host: str, port: int, fields: Mapping[str, str | bytes]
) -> bytes:
    """A request's line and headers up to its Content-Length, each header checked."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in fields.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if _BREAKS_A_LINE.search(name) or _BREAKS_A_LINE.search(text) or ":" in name:
            raise requests.exceptions.InvalidHeader(f"header {name!r} would break the request")
        if name.lower() not in ("host", "content-length", "transfer-encoding"):
            lines.append(f"{name}: {text}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")
