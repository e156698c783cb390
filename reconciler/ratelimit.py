"""A client-side token bucket: at most `burst` requests at once, then `qps` per second.

Owns only the arithmetic and the waiting. The cluster adapter takes one token before every
request it sends, from every thread, so parallel apply can never flood the API server (which
would answer 429 and slow everyone down, including the controllers GitWarden must not starve).
Must not know about HTTP or Kubernetes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Thread-safe; `acquire` blocks until a token is free. qps <= 0 means no limit."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = float(qps)
        self._capacity = float(max(burst, 1))
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting if none is left; returns the seconds waited."""
        if self._rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            # Reserve the token even when it is not there yet: the balance goes negative and
            # later callers wait behind us, so waiting threads are served in arrival order.
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self._rate
        if wait > 0:
            self._sleep(wait)
        return wait
