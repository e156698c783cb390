"""The HTTP transport under opa-python-client's session: one kept-alive connection, no pool.

Owns `KeepAliveAdapter`, a requests transport adapter (the extension point requests offers
for sending) mounted for `http://` on each thread's OPA client. It sends the request the
client prepared over one persistent `http.client` connection to the OPA sidecar and hands
back a plain `requests.Response`: opa-python-client still builds every query and reads every
answer. It exists because urllib3's pool machinery (connection keys, pool lookups, retry
objects, header dictionaries) cost about as much CPU per decision as the rest of the call.

It never retries: a failure to connect, send or read raises `requests.ConnectionError` or
`requests.Timeout` at once (the engine answers fail-closed) and the connection is dropped, so
the next decision starts a fresh one. A kept-alive connection that OPA closed while idle is
noticed before a request is written (the socket reads as ready), and replaced; a request is
never sent twice. Answers must be uncompressed (it asks for `identity`).
"""

from __future__ import annotations

import http.client
import io
import select
import socket
from collections.abc import Mapping
from typing import Any

import requests
from requests import adapters, structures


class DirectSession(requests.Session):
    """A session that sends what the OPA client asks, as it asks, through its adapter.

    It keeps the session's headers (the client's bearer token, if any) and the per-call
    timeout, and leaves out what a local policy engine never needs and an attacker could
    use: no cookies kept or sent, no redirects followed, no auth or proxies from the
    environment. `requests.Session.request` spends most of its time merging those.
    """

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
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.prepare_url(url, params)
        prepared.prepare_headers({**self.headers, **(headers or {})})
        prepared.prepare_body(data, None, json)
        return self.get_adapter(prepared.url or "").send(prepared, timeout=timeout)


class KeepAliveAdapter(adapters.BaseAdapter):
    """Sends over one persistent plain-HTTP connection to `host:port`."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._host, self._port = host, port
        self._conn: http.client.HTTPConnection | None = None

    def send(  # noqa: PLR0917 - the signature requests calls adapters with
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send `request` and read its whole answer; no retry on any failure."""
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        headers = dict(request.headers)
        headers["Accept-Encoding"] = "identity"
        try:
            conn = self._connection(seconds)
            conn.request(
                request.method or "POST",
                request.path_url,
                body=request.body,
                headers=headers,
            )
            raw = conn.getresponse()
            body = raw.read()
        except TimeoutError as exc:
            self.close()
            raise requests.Timeout(exc, request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise requests.ConnectionError(exc, request=request) from exc
        if raw.getheader("Content-Encoding", "identity") != "identity":
            self.close()
            raise requests.ConnectionError("OPA answered with a compressed body", request=request)
        if raw.will_close:
            self.close()
        return _response(request, raw, body)

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and (conn.sock is None or _readable(conn.sock)):
            # Idle, yet readable: OPA closed it (or sent bytes nobody asked for). Replace it
            # before writing, so no request is ever lost to a stale connection or resent.
            self.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            conn.connect()
            # The request goes out as one head and one body: no Nagle delay between them.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def __del__(self) -> None:
        # An engine dropped without close() (a test's, a worker's at exit) owns no socket.
        self.close()

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _response(
    request: requests.PreparedRequest, raw: http.client.HTTPResponse, body: bytes
) -> requests.Response:
    response = requests.Response()
    response.status_code = raw.status
    response.reason = raw.reason
    response.headers = structures.CaseInsensitiveDict(raw.getheaders())
    response.url = request.url or ""
    response.request = request
    # A file-like `raw` is how requests reads any adapter's body (`content`, `json()`).
    response.raw = io.BytesIO(body)
    response.encoding = "utf-8"
    return response
