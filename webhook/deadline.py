"""The TLS socket whose blocking reads share one deadline per request.

Owns `DeadlineSocket`, which `webhook.serve` sets as its TLS context's socket class and
`webhook.worker` arms with the request timeout, and the peer-address formatting both use in
log lines (an address, never bytes of a request). It must not log or keep what it reads.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import Any

log = logging.getLogger("gitwarden.webhook.serving")


class DeadlineSocket(ssl.SSLSocket):
    """An SSLSocket whose blocking reads share one deadline per request.

    gunicorn switches a connection's socket to blocking when a thread takes it up for a
    request and back to non-blocking when it returns to the poller; that switch starts the
    request's deadline here. Each read waits at most for what is left of it, and a read past
    it returns end of stream, so neither gunicorn's parser nor the app's body read can hold a
    thread longer than `request_timeout`, however slowly a client trickles bytes.
    """

    request_timeout: float | None = None
    expired = False
    """A read ran past the deadline: the worker closes the connection after the answer."""
    _deadline: float | None = None

    def setblocking(self, flag: bool) -> None:
        if flag and self.request_timeout is not None:
            self._deadline = time.monotonic() + self.request_timeout
            super().settimeout(self.request_timeout)
            return
        self._deadline = None
        super().setblocking(flag)

    def _remaining(self) -> float | None:
        """Seconds left for this request's reads, None without a deadline, 0 once past it."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    def _expired(self) -> bytes:
        if not self.expired:
            self.expired = True
            log.info(
                "closing the connection from %s: request not received within %.1f s",
                _peer(self),
                self.request_timeout,
            )
        return b""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        remaining = self._remaining()
        if remaining is None:
            return super().recv(buflen, flags)
        if remaining <= 0:
            return self._expired()
        super().settimeout(remaining)
        try:
            return super().recv(buflen, flags)
        except TimeoutError:
            return self._expired()

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        remaining = self._remaining()
        if remaining is None:
            return super().recv_into(buffer, nbytes, flags)
        if remaining <= 0:
            self._expired()
            return 0
        super().settimeout(remaining)
        try:
            return super().recv_into(buffer, nbytes, flags)
        except TimeoutError:
            self._expired()
            return 0

    def sendall(self, data: Any, flags: int = 0) -> None:
        # The answer gets a fresh allowance: a request that used most of its deadline to arrive
        # must still be answered, and an answer is small.
        # Setting a timeout is a system call: only when a deadline read has shortened it (gunicorn
        # writes the head and the body of each answer in two calls).
        if (
            self._deadline is not None
            and self.request_timeout is not None
            and self.gettimeout() != self.request_timeout
        ):
            super().settimeout(self.request_timeout)
        super().sendall(data, flags)


def addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def _peer(sock: socket.socket) -> str:
    try:
        return addr(sock.getpeername())
    except OSError:
        return "a closed connection"
