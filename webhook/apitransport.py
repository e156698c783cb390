"""GETs to the API server for the parent lookups: one kept-alive TLS connection per thread.

Owns `ApiTransport`, which sends a GET with the headers it is given over the calling thread's
own persistent HTTP/1.1 connection and returns the status and body, and `tls_context`, the
TLS settings the official client's connection pool would use for the same configuration
(certificates verified against the configured CA, hostname checked, TLS 1.2 or later, ALPN
http/1.1, the client certificate when one is configured). It exists because the official
client's request path (urllib3's pool, http.client and the email package's header parsing)
costs several times the CPU of the exchange itself; the answer is read by webhook/httpreader.

It never retries, reads no environment variable and uses no proxy: a failure to connect, send
or read, or an answer the reader cannot take, raises `TransportFailed` and drops the thread's
connection, so the next lookup starts a fresh one. A kept-alive connection the API server
closed while idle is noticed before a request is written (the socket reads as ready) and
replaced; a request that was written is never sent again. It knows no Kubernetes types and
decides nothing from a status: the caller (webhook/parents) does.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from webhook import httpreader

# What a header value or request target may never hold: it would end the line.
_BREAKS_A_LINE = re.compile(r"[\r\n\x00]")


class TransportFailed(Exception):
    """No answer: the connection, the TLS handshake, or the answer's framing failed."""


@dataclass(frozen=True)
class Answer:
    """An answer's status and (uncompressed) body."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Server:
    """Where the API server is and how to reach it: `https://host:port/prefix`."""

    host: str
    port: int
    prefix: str
    server_hostname: str
    """The name checked against the API server's certificate (and sent as SNI)."""

    @classmethod
    def from_url(cls, url: str, tls_server_name: str | None) -> Server:
        """The server of a kubeconfig's `server` URL; only https, no credentials in it."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc or parts.query:
            raise ValueError("the API server URL must be https://host[:port][/path]")
        prefix = parts.path.rstrip("/")
        if _BREAKS_A_LINE.search(prefix) or " " in prefix:
            raise ValueError("the API server URL's path holds a space or a line break")
        return cls(parts.hostname, parts.port or 443, prefix, tls_server_name or parts.hostname)


def tls_context(
    *,
    verify: bool,
    ca_file: str | None,
    ca_data: str | bytes | None,
    cert_file: str | None,
    key_file: str | None,
) -> ssl.SSLContext:
    """The client's TLS settings as urllib3 builds them for the official client.

    Without a configured CA the system's trust store is used, as urllib3 does; `verify` False
    (a kubeconfig's insecure-skip-tls-verify) turns verification off, as it does there.
    Unlike urllib3, it never reads SSLKEYLOGFILE from the environment.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    context.post_handshake_auth = True
    context.hostname_checks_common_name = False  # only subjectAltName names the server
    if verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if ca_file or ca_data:
        context.load_verify_locations(cafile=ca_file or None, cadata=ca_data or None)
    else:
        context.load_default_certs()
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    context.set_alpn_protocols(["http/1.1"])  # never h2: the reader speaks HTTP/1.x only
    return context


class _Connection:
    """One thread's TLS connection, or none yet."""

    def __init__(self) -> None:
        self.sock: ssl.SSLSocket | None = None
        self.poller: select.poll | None = None

    def close(self) -> None:
        sock, self.sock, self.poller = self.sock, None, None
        if sock is not None:
            sock.close()

    def __del__(self) -> None:
        # A thread that ended, or a transport dropped, leaves no socket open behind it.
        self.close()


class ApiTransport:
    """GETs to one API server; each thread sends over its own kept-alive connection."""

    def __init__(self, server: Server, context: ssl.SSLContext, timeout: float) -> None:
        self._server, self._context, self._timeout = server, context, timeout
        host = f"[{server.host}]" if ":" in server.host else server.host
        self._host_line = f"Host: {host}:{server.port}\r\n"
        self._local = threading.local()

    def get(self, target: str, fields: Mapping[str, str]) -> Answer:
        """GET `prefix + target` with `fields` as headers; `TransportFailed` on any failure.

        `target` is a path and query the caller built from checked segments; a header value
        or target that would break the request line is refused before anything is sent.
        """
        wire = self._request(target, fields)
        conn = self._connection()
        try:
            sock, fresh = self._socket(conn)
            sock.sendall(wire)
            status, _, _, body, will_close = httpreader.read_answer(sock)
            if will_close or sock.pending():
                conn.close()  # bytes nobody asked for, or the server is done with it
            elif fresh:  # the next request on it gets the whole budget again
                sock.settimeout(self._timeout)
        except (OSError, ValueError, httpreader.BadAnswer) as exc:
            # ValueError: a server name ssl cannot encode (IDNA) refuses, never escapes.
            conn.close()
            # The exception's type is enough: its text can name paths or peers.
            raise TransportFailed(type(exc).__name__) from None
        return Answer(status, body)

    def close(self) -> None:
        """Drop the calling thread's connection."""
        self._connection().close()

    def _request(self, target: str, fields: Mapping[str, str]) -> bytes:
        path = self._server.prefix + target
        if _BREAKS_A_LINE.search(path) or " " in path or not path.startswith("/"):
            raise TransportFailed("the request target would break the request line")
        head = [f"GET {path} HTTP/1.1\r\n", self._host_line]
        for name, value in fields.items():
            if _BREAKS_A_LINE.search(name + value) or ":" in name or not name.isascii():
                raise TransportFailed(f"header {name} would break the request")
            head.append(f"{name}: {value}\r\n")
        head.append("Accept-Encoding: identity\r\n\r\n")  # the reader takes no compressed body
        try:
            return "".join(head).encode("latin-1")
        except UnicodeEncodeError:  # a token or target outside latin-1: HTTP/1.1 cannot carry it
            raise TransportFailed("a header or the target is not latin-1") from None

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _Connection()
        return conn

    def _socket(self, conn: _Connection) -> tuple[ssl.SSLSocket, bool]:
        """The thread's connection, and whether it was opened just now."""
        if conn.sock is not None and conn.poller is not None and conn.poller.poll(0):
            # Idle, yet readable: the API server closed it (or sent bytes nobody asked for).
            # Replace it before writing, so no request is lost to a stale connection or resent.
            conn.close()
        if conn.sock is not None:
            return conn.sock, False
        began = time.monotonic()
        raw = socket.create_connection((self._server.host, self._server.port), self._timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self._context.wrap_socket(raw, server_hostname=self._server.server_hostname)
        except BaseException:
            raw.close()
            raise
        # As urllib3's total timeout: connecting and the handshake count against the budget,
        # each later wait gets what is left (at least a little, never more than the whole).
        sock.settimeout(max(self._timeout - (time.monotonic() - began), 0.05))
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        conn.sock, conn.poller = sock, poller
        return sock, True
