"""The key service's wait: leadership won after a standby's look wakes it at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from reconciler.services import keyservice


def service(leading: Any) -> keyservice.KeyService:
    settings = keyservice.Settings(check_every=3600.0)
    # The wait never reaches the API: no client is needed for it.
    return keyservice.KeyService(api=None, settings=settings, leading=leading)


def test_a_lease_won_between_the_standbys_look_and_its_wait_ends_the_wait_at_once() -> None:
    """The race a demo run met: the last look was a standby's, the Lease is ours by the wait."""
    keys = service(leading=lambda: True)
    keys._refreshed_as_leader = False  # what refresh() recorded: it looked as a standby
    started = time.monotonic()
    assert keys._wait(threading.Event()) is False
    assert time.monotonic() - started < 2.0


def test_a_leader_that_made_its_key_waits_for_the_next_check() -> None:
    keys = service(leading=lambda: True)
    keys._refreshed_as_leader = True
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    # True only when `stop` ended it: leading did not cut the leader's wait short.
    assert keys._wait(stop) is True
    assert stop.is_set()
