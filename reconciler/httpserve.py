"""The reconciler's small stdlib HTTP servers: a listener on a background thread, bounded.

Owns what the certificate endpoint, the health and metrics endpoints and the push receiver
share: a `ThreadingHTTPServer` on its own thread (IPv4 or IPv6 by the host), daemon request
threads, a per-read socket timeout and a whole-connection deadline (a client that dribbles one
byte at a time cannot hold a thread for longer than `deadline`), a cap on connections served at
once (more are closed on accept, so a flood cannot grow threads without bound), HTTP/1.0 (one
request per connection), and a `Handler` base whose replies always carry a length and whose
access log never carries header values or bodies. Must not know any route: the handlers do.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

READ_TIMEOUT = 5.0
DEADLINE = 15.0
MAX_CONNECTIONS = 32
# How often the accept loop looks for `stop()`: the longest a shutdown waits for it.
_POLL = 0.1

_log = logging.getLogger("gitwarden.http")


class Handler(http.server.BaseHTTPRequestHandler):
    """A request handler base: no version banner, quiet access log, `reply` with a length."""

    server_version = "gitwarden"
    sys_version = ""
    # One request per connection: keep-alive would let one client hold a thread between requests.
    protocol_version = "HTTP/1.0"
    # The stdlib's default (0.9) answers a malformed request line with a bare body.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        settings = self.server.limits if isinstance(self.server, _Server) else _Limits()
        # A socket timeout bounds every single read and write.
        self.request.settimeout(settings.read_timeout)
        super().setup()
        # A watchdog for the whole exchange: per-read timeouts alone would let a client that
        # sends a byte every few seconds keep the thread for as long as it likes.
        self._watchdog = threading.Timer(settings.deadline, self._cut)
        self._watchdog.daemon = True
        self._watchdog.start()

    def finish(self) -> None:
        self._watchdog.cancel()
        # The client went away, or the watchdog cut it off: nothing left to send.
        with contextlib.suppress(OSError):
            super().finish()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):  # already closed
            self.connection.shutdown(socket.SHUT_RDWR)

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a complete answer (no body for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The method and the path without its query (a query could carry a token someone
        # put in a webhook URL); never a header.
        path = str(getattr(self, "path", "")).split("?", 1)[0][:200]  # unset if malformed
        _log.debug("%s: %s %s -> %s", type(self).__name__, self.command, path, code)

    def log_error(self, format: str, *args: Any) -> None:  # stdlib signature
        # The stdlib's messages quote the raw request line; only the status code is kept.
        code = args[0] if args and isinstance(args[0], int) else "no answer"
        _log.debug("%s: refused a malformed or timed-out request (%s)", type(self).__name__, code)

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        _log.debug("%s: %s", type(self).__name__, format)


class _Limits:
    def __init__(
        self,
        read_timeout: float = READ_TIMEOUT,
        deadline: float = DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.read_timeout, self.deadline = read_timeout, deadline
        self.slots = threading.BoundedSemaphore(max_connections)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    limits: _Limits

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.limits.slots.acquire(blocking=False):
            # Full: close at once rather than queue a thread per waiting client.
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.limits.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.limits.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a broken connection is not news.
        _log.debug("connection from %s ended with an error", client_address[0])


class _Server6(_Server):
    address_family = socket.AF_INET6


class Listener:
    """Serves `handler` on (host, port) on a background thread until `stop()`.

    Port 0 picks a free port (`port` says which). Binding happens in the constructor, so a port
    in use fails there with `OSError`, before anything starts.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: type[Handler],
        *,
        name: str,
        read_timeout: float = READ_TIMEOUT,
        deadline: float = DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, port), handler)
        self._httpd.limits = _Limits(read_timeout, deadline, max_connections)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(_POLL,), name=name, daemon=True
        )
        self._started = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> Listener:
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._httpd.shutdown()
            self._thread.join()
            self._started = False
        self._httpd.server_close()

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
