"""A TCP proxy on 127.0.0.1 that counts connections and can cut them, for the lookup tests.

Owns one listening socket and two threads per connection. TLS passes through untouched (the
client still verifies the API server's certificate, whose names include 127.0.0.1), so a test
can count the connections a client opens, close every idle one at once (`drop`), or let a
request reach the server and close the connection instead of forwarding its answer
(`swallow`). Knows nothing of HTTP; every socket has a timeout, so no thread outlives a test
by more than that.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.harness.controlplane import LOOPBACK

TIMEOUT = 30.0


class Proxy:
    """Forwards 127.0.0.1:<port> to `target`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.accepted = 0
        self.swallow = False
        """Close the connection when the server's answer starts, instead of forwarding it."""
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.drop()

    def drop(self) -> None:
        """Close every connection now, both ways (a server closing idle keep-alives)."""
        with self._lock:
            live, self._live = self._live, []
        _close(*live)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(TIMEOUT)
            try:
                upstream = socket.create_connection(self.target, timeout=TIMEOUT)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._live += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if answers and self.swallow:
                    break
                sink.sendall(chunk)
        _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@contextlib.contextmanager
def proxy_to(target: tuple[str, int]) -> Iterator[Proxy]:
    """A running proxy to `target`, stopped (and its connections closed) on the way out."""
    proxy = Proxy(target)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
