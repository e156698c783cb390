"""GETs to the API server for the parent lookups: one kept-alive TLS connection per thread.

Owns `ApiTransport`, which sends a GET with the headers it is given over the calling thread's
own persistent HTTP/1.1 connection and returns the status and body, and `tls_context`, the
TLS settings the official client's connection pool would use for the same configuration
(certificates verified against the configured CA, hostname checked, TLS 1.2 or later, ALPN
http/1.1, the client certificate when one is configured). It exists because the official
client's request path (urllib3's pool, http.client and the email package's header parsing)
costs several times the CPU of the exchange itself; the answer is read by webhook/httpreader.

`LoopTransport` makes the same GETs for an event loop that must never wait: `start` returns
an `Exchange` (connect, TLS handshake, send, read, each step non-blocking) that the caller
advances whenever its socket is ready, over a small pool of kept-alive connections of its own.
It connects only to an API server named by an IP address (a host name would need a blocking
resolver; in a pod the API server is an address); with a name, or with every connection busy,
`start` returns None and the caller makes the GET on a thread instead.

It never retries, reads no environment variable and uses no proxy: a failure to connect, send
or read, or an answer the reader cannot take, raises `TransportFailed` and drops the thread's
connection, so the next lookup starts a fresh one. A kept-alive connection the API server
closed while idle is noticed before a request is written (the socket reads as ready) and
replaced; a request that was written is never sent again. It knows no Kubernetes types and
decides nothing from a status: the caller (webhook/parents) does.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

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


def _request_bytes(server: Server, host_line: str, target: str, fields: Mapping[str, str]) -> bytes:
    """The GET's bytes; `TransportFailed` for a target or header that would break a line."""
    path = server.prefix + target
    if _BREAKS_A_LINE.search(path) or " " in path or not path.startswith("/"):
        raise TransportFailed("the request target would break the request line")
    head = [f"GET {path} HTTP/1.1\r\n", host_line]
    for name, value in fields.items():
        if _BREAKS_A_LINE.search(name + value) or ":" in name or not name.isascii():
            raise TransportFailed(f"header {name} would break the request")
        head.append(f"{name}: {value}\r\n")
    head.append("Accept-Encoding: identity\r\n\r\n")  # the reader takes no compressed body
    try:
        return "".join(head).encode("latin-1")
    except UnicodeEncodeError:  # a token or target outside latin-1: HTTP/1.1 cannot carry it
        raise TransportFailed("a header or the target is not latin-1") from None


def _host_line(server: Server) -> str:
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"Host: {host}:{server.port}\r\n"


class ApiTransport:
    """GETs to one API server; each thread sends over its own kept-alive connection."""

    def __init__(self, server: Server, context: ssl.SSLContext, timeout: float) -> None:
        self._server, self._context, self._timeout = server, context, timeout
        self._host_line = _host_line(server)
        self._local = threading.local()

    def get(self, target: str, fields: Mapping[str, str]) -> Answer:
        """GET `prefix + target` with `fields` as headers; `TransportFailed` on any failure.

        `target` is a path and query the caller built from checked segments; a header value
        or target that would break the request line is refused before anything is sent.
        """
        wire = _request_bytes(self._server, self._host_line, target, fields)
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


# An answer the event loop reads is parsed again as each part arrives; past this it fails
# (closed): more than any object's metadata can be (etcd keeps objects up to 1.5 MiB).
LOOP_ANSWER_LIMIT = 2 * 1024 * 1024
# Connections a LoopTransport opens at most (each worker's event loop has one transport).
LOOP_CONNECTIONS = 8


class _Incomplete(Exception):
    """The buffered bytes end before the answer does."""


class _Buffered:
    """The bytes an exchange has received so far, read as a socket by httpreader."""

    def __init__(self, data: bytes, ended: bool) -> None:
        self._data, self._at, self._ended = data, 0, ended

    def recv(self, size: int, /) -> bytes:
        if self._at >= len(self._data):
            if self._ended:
                return b""
            raise _Incomplete
        chunk = self._data[self._at : self._at + size]
        self._at += len(chunk)
        return chunk


class Exchange:
    """One GET on a non-blocking connection, advanced by the caller's event loop.

    The caller waits for `sock` to be writable (`wants_write`) or readable, then calls
    `advance`, until it returns the answer; `TransportFailed` ends it (the connection is
    closed). `deadline` (time.monotonic) is the caller's to keep: past it, `abandon`.
    """

    def __init__(self, pool: LoopTransport, conn: _LoopConn, wire: bytes, deadline: float) -> None:
        self._pool, self._conn, self._wire, self.deadline = pool, conn, wire, deadline
        self._received = bytearray()
        self._done = False

    @property
    def sock(self) -> socket.socket:
        """The socket to wait on now (it changes once, when TLS wraps the connection)."""
        return self._conn.sock

    @property
    def reused(self) -> bool:
        """The connection is a kept-alive one: `advance` may be called before any wait."""
        return self._conn.reused

    @property
    def wants_write(self) -> bool:
        """Wait for the socket to be writable (True) or readable (False)."""
        return self._conn.stage in ("connecting", "sending") or self._conn.handshake_writes

    def advance(self) -> Answer | None:
        """As far as the socket allows: the answer once it is complete, else None."""
        if self._done:
            raise TransportFailed("the exchange is over")
        try:
            answer = self._advance()
        except (OSError, ValueError, httpreader.BadAnswer) as exc:
            self.abandon()
            raise TransportFailed(type(exc).__name__) from None
        if answer is not None:
            self._done = True
        return answer

    def abandon(self) -> None:
        """Give up: the connection is closed (a GET that may have been sent is never resent)."""
        if not self._done:
            self._done = True
            self._pool.discard(self._conn)

    def _advance(self) -> Answer | None:
        conn = self._conn
        if conn.stage == "connecting":
            error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise ConnectionRefusedError(error, "connect failed")
            conn.wrap()
        if conn.stage == "handshake":
            if not conn.handshake():
                return None
            conn.stage = "sending"
        if conn.stage == "sending":
            tls = cast(ssl.SSLSocket, conn.sock)
            while self._wire:
                try:
                    sent = tls.send(self._wire)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    return None
                self._wire = self._wire[sent:]
            conn.stage = "reading"
        return self._read()

    def _read(self) -> Answer | None:
        tls = cast(ssl.SSLSocket, self._conn.sock)
        ended = False
        while True:
            try:
                chunk = tls.recv(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:
                ended = True
                break
            self._received += chunk
            if len(self._received) > LOOP_ANSWER_LIMIT:
                raise httpreader.BadAnswer("answer too large for the event loop")
        if not self._received and not ended:
            return None
        reader = _Buffered(bytes(self._received), ended)
        try:
            status, _, _, body, will_close = httpreader.read_answer(reader)
        except _Incomplete:
            return None
        if will_close or ended or tls.pending():
            self._pool.discard(self._conn)  # the server is done with it, or sent bytes unasked
        else:
            self._pool.release(self._conn)
        return Answer(status, body)


class _LoopConn:
    """One non-blocking connection of a `LoopTransport`: its socket and how far it got."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self.sock = sock
        self.stage = "connecting"
        self.handshake_writes = False
        self.reused = False
        self._context, self._server_hostname = context, server_hostname

    def wrap(self) -> None:
        self.sock = self._context.wrap_socket(
            self.sock, server_hostname=self._server_hostname, do_handshake_on_connect=False
        )
        self.stage = "handshake"

    def handshake(self) -> bool:
        """True once the TLS handshake is complete."""
        tls = cast(ssl.SSLSocket, self.sock)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self.handshake_writes = False
            return False
        except ssl.SSLWantWriteError:
            self.handshake_writes = True
            return False
        self.handshake_writes = False
        return True

    def stale(self) -> bool:
        """An idle connection that reads as ready: the server closed it (or sent bytes unasked)."""
        tls = cast(ssl.SSLSocket, self.sock)
        try:
            tls.recv(1)
        except ssl.SSLWantReadError:
            return False
        except (OSError, ValueError):
            return True
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __del__(self) -> None:
        # A transport dropped (or a worker's exit) leaves no socket open behind it.
        self.close()


class LoopTransport:
    """GETs for an event loop (`Exchange`), over at most `connections` connections of its own.

    For one thread only (the event loop's): nothing here is locked.
    """

    def __init__(
        self,
        server: Server,
        context: ssl.SSLContext,
        timeout: float,
        connections: int = LOOP_CONNECTIONS,
    ) -> None:
        self._server, self._context, self._timeout = server, context, timeout
        self._host_line = _host_line(server)
        self._limit = connections
        self._idle: list[_LoopConn] = []
        self._busy = 0
        try:
            address = ipaddress.ip_address(server.host)
        except ValueError:
            address = None  # a host name: the event loop cannot resolve it without waiting
        self._family = (
            None if address is None else socket.AF_INET6 if address.version == 6 else socket.AF_INET
        )

    def start(self, target: str, fields: Mapping[str, str]) -> Exchange | None:
        """Begin a GET (nothing is sent yet); None: no connection free, or no address.

        `TransportFailed` for a request that cannot be sent or a connection refused at once.
        """
        if self._family is None:
            return None
        wire = _request_bytes(self._server, self._host_line, target, fields)
        conn = self._take()
        if conn is None:
            return None
        return Exchange(self, conn, wire, time.monotonic() + self._timeout)

    def release(self, conn: _LoopConn) -> None:
        """An exchange is over and its connection can carry the next."""
        self._busy -= 1
        conn.stage = "sending"  # connected and handshaken: the next exchange starts sending
        conn.reused = True
        self._idle.append(conn)

    def discard(self, conn: _LoopConn) -> None:
        """An exchange is over and its connection is closed."""
        self._busy -= 1
        conn.close()

    def _take(self) -> _LoopConn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.stale():
                self._busy += 1
                return conn
            conn.close()
        if self._busy >= self._limit or self._family is None:
            return None
        raw = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = raw.connect_ex((self._server.host, self._server.port))
            if error not in (0, errno.EINPROGRESS):
                raise ConnectionRefusedError(error, "connect failed")
        except OSError as exc:
            raw.close()
            raise TransportFailed(type(exc).__name__) from None
        self._busy += 1
        return _LoopConn(raw, self._context, self._server.server_hostname)
