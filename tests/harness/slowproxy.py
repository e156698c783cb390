"""A TCP proxy on 127.0.0.1 that can hold back, refuse, cut or count what it forwards.

Owns one listening socket and a thread per connection pair. For fault tests: `delay` holds
back the upstream's first answer bytes of every request by that many seconds (a slow policy
engine), `refuse` closes every connection, new or kept alive, at once (one that is down). For
connection tests: `accepted` counts the connections clients opened, `drop()` closes every open
one both ways (a server closing idle keep-alives), and `swallow` closes a connection when its
answer starts instead of forwarding it (an answer lost after the request was sent). TLS passes
through untouched. Knows nothing of HTTP. Every socket has a timeout, so no thread outlives a
test by more than that.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from tests.harness.controlplane import LOOPBACK

TIMEOUT = 30.0


class SlowProxy:
    """Forwards 127.0.0.1:<port> to `target` (host, port), set before the first connection."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.delay = 0.0
        self.refuse = False
        self.swallow = False
        self.accepted = 0
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.drop()

    def drop(self) -> None:
        """Close every open connection now, both ways."""
        with self._lock:
            live, self._live = self._live, []
        _close(*live)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self.refuse or self.target is None:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        assert self.target is not None
        client.settimeout(TIMEOUT)
        try:
            upstream = socket.create_connection(self.target, timeout=TIMEOUT)
        except OSError:
            client.close()
            return
        with self._lock:
            self.accepted += 1
            self._live += [client, upstream]
        asked = threading.Event()  # a request went up and its answer has not come back yet
        threading.Thread(target=self._up, args=(client, upstream, asked), daemon=True).start()
        self._down(upstream, client, asked)

    def _up(self, client: socket.socket, upstream: socket.socket, asked: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while (chunk := client.recv(65536)) and not self.refuse:
                asked.set()
                upstream.sendall(chunk)
        _close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, asked: threading.Event) -> None:
        """Answers back to the client; each one's first bytes held back `delay` seconds.

        Held per request, not per connection: a kept-alive connection is slow every time.
        """
        with contextlib.suppress(OSError):
            while (chunk := upstream.recv(65536)) and not self.refuse:
                if asked.is_set():
                    asked.clear()
                    if self.delay:
                        time.sleep(self.delay)
                if self.refuse or self.swallow:
                    break
                client.sendall(chunk)
        _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@contextlib.contextmanager
def slow_proxy(target: tuple[str, int] | None = None) -> Iterator[SlowProxy]:
    """A running proxy (to `target`, or to one set later), stopped on the way out."""
    proxy = SlowProxy(target)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
