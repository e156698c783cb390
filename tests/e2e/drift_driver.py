"""A small stand-in for the loop's worker in the drift tests: watches feed a queue, one thread
calls `Repairer.handle` for each event, and every outcome is recorded for the test to read.

Nothing is faked: the watches, the repairer and the cluster adapter are the product's, on the
real API server. Used by tests/e2e/test_drift_repair.py and by the benches before the loop
helper's controller exists.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from reconciler import drift, watches


@dataclass
class Driver:
    """What the worker saw: events handled, repairs made (with when), errors raised."""

    repairer: drift.Repairer
    events: queue.Queue[watches.Event | None] = field(default_factory=queue.Queue)
    handled: list[watches.Event] = field(default_factory=list)
    repairs: list[tuple[float, drift.Repair]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def work(self) -> None:
        while True:
            event = self.events.get()
            if event is None:
                return
            try:
                repair = self.repairer.handle(event)
            except Exception as exc:  # the tests assert there were none
                with self.lock:
                    self.errors.append(exc)
                repair = None
            with self.lock:
                self.handled.append(event)
                if repair is not None:
                    self.repairs.append((time.monotonic(), repair))

    def listed(self) -> int:
        with self.lock:
            return sum(1 for e in self.handled if e.listed)

    def repairs_of(self, name: str) -> list[drift.Repair]:
        with self.lock:
            return [r for _, r in self.repairs if r.ref.name == name]

    def seen(self, name: str, version: str) -> bool:
        """Whether the worker has handled the event of `name` at `version`."""
        with self.lock:
            return any(e.ref.name == name and e.resource_version == version for e in self.handled)


def _quiet(target: watches.Target, deadline: float) -> None:
    """Wait until the adapter has sent nothing for 0.3 s (each kind's watch is open), so tests
    that count requests count only their own."""
    sent = getattr(target, "requests", None)
    if sent is None:
        return
    last, since = sent, time.monotonic()
    while time.monotonic() - since < 0.3 and time.monotonic() < deadline:
        time.sleep(0.02)
        now = getattr(target, "requests", 0)
        if now != last:
            last, since = now, time.monotonic()


@contextmanager
def driving(
    repairer: drift.Repairer, target: watches.Target, *, ready_timeout: float = 30.0
) -> Iterator[Driver]:
    """Watches of the repairer's kinds feeding one worker, until the initial lists are handled."""
    driver = Driver(repairer)
    worker = threading.Thread(target=driver.work, name="drift-worker", daemon=True)
    worker.start()
    selector = drift.selector(repairer.settings)
    follower = watches.Watches(target, selector, driver.events.put, driver.restarts.append)
    try:
        follower.follow(repairer.kinds())
        deadline = time.monotonic() + ready_timeout
        while driver.listed() < len(repairer) or not driver.events.empty():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the watches listed {driver.listed()} of {len(repairer)} objects"
                )
            time.sleep(0.02)
        _quiet(target, deadline)
        yield driver
    finally:
        follower.stop()
        driver.events.put(None)
        worker.join(10)
