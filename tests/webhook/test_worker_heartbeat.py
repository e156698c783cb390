"""The serving worker's heartbeat: at most one system call a second, however busy it is."""

from __future__ import annotations

import logging
import ssl
import time

from gunicorn import config

from webhook import worker


class _Serving:
    """What the worker reads from the application (`worker.TLSServing`)."""

    handshake_timeout = 3.0
    request_timeout = 10.0
    review_paths = ()

    def server_context(self) -> ssl.SSLContext:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


def test_a_busy_worker_touches_its_heartbeat_once_a_second_not_once_a_turn() -> None:
    w = worker.GuardedThreadWorker(
        1, 0, [], _Serving(), 30, config.Config(), logging.getLogger("test-worker")
    )
    try:
        w.notify()
        first = w.tmp.last_update()
        time.sleep(0.05)
        for _ in range(1000):  # a thousand turns of a loaded event loop
            w.notify()
        assert w.tmp.last_update() == first
        time.sleep(worker.HEARTBEAT_SECONDS + 0.05)
        w.notify()
        assert w.tmp.last_update() > first
    finally:
        w.tmp.close()
