"""Lease election over a fake of our own LeaseStore port, with a clock the test moves."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from reconciler import controlconfig, errors, leader

NS, NAME = "gitwarden", "gitwarden-reconciler"
SETTINGS = controlconfig.LeaderConfig(lease_duration=15, renew_deadline=10, retry_period=2)


class Away(errors.Transient):
    """The fake store's stand-in for an API server that does not answer."""


class FakeLeases:
    """An in-memory LeaseStore with resourceVersion preconditions, like the API server's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.record: leader.LeaseRecord | None = None
        self.version = 0
        self.failing = False
        self.writes: list[str] = []  # holders written, in order

    def get(self, namespace: str, name: str) -> tuple[leader.LeaseRecord, str] | None:
        with self.lock:
            if self.failing:
                raise Away("no answer")
            return None if self.record is None else (self.record, str(self.version))

    def create(self, namespace: str, name: str, record: leader.LeaseRecord) -> str | None:
        with self.lock:
            if self.failing:
                raise Away("no answer")
            if self.record is not None:
                return None
            return self._write(record)

    def update(
        self, namespace: str, name: str, record: leader.LeaseRecord, resource_version: str
    ) -> str | None:
        with self.lock:
            if self.failing:
                raise Away("no answer")
            if self.record is None:
                raise Away("not found")
            if resource_version != str(self.version):
                return None
            return self._write(record)

    def _write(self, record: leader.LeaseRecord) -> str:
        self.record = record
        self.version += 1
        self.writes.append(record.holder)
        return str(self.version)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(
    store: leader.LeaseStore,
    holder: str,
    clock: Clock,
    settings: controlconfig.LeaderConfig = SETTINGS,
) -> leader.Elector:
    return leader.Elector(store, NS, NAME, holder, settings, clock=clock)


def test_of_two_electors_exactly_one_leads() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_once() is True
    assert b.try_once() is False
    for _ in range(20):  # many periods of renewing: the standby never gets in
        clock.now += SETTINGS.retry_period
        assert (a.try_once(), b.try_once()) == (True, False)
    assert a.leading.is_set()
    assert not b.leading.is_set()
    assert store.record is not None
    assert store.record.holder == "a"
    assert store.record.lease_duration == 15


def test_a_standby_takes_over_only_after_the_lease_expires_by_its_own_clock() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_once()
    assert not b.try_once()  # b saw the record now: its timer starts here
    # `a` dies: no more renewals. Just before lease_duration has passed, b still waits.
    clock.now += SETTINGS.lease_duration - 0.01
    assert not b.try_once()
    clock.now += 0.02
    assert b.try_once()
    assert store.record is not None
    assert store.record.holder == "b"
    assert store.record.transitions == 1


def test_the_holders_timestamps_are_not_trusted() -> None:
    """A record whose renewTime claims the far past is still held until our clock says so."""
    store, clock = FakeLeases(), Clock()
    store.record = leader.LeaseRecord(
        holder="other",
        lease_duration=15,
        acquire_time="2001-01-01T00:00:00.000000Z",
        renew_time="2001-01-01T00:00:00.000000Z",
    )
    b = elector(store, "b", clock)
    assert not b.try_once()
    clock.now += 14
    assert not b.try_once()
    clock.now += 2
    assert b.try_once()


def test_each_renewal_seen_restarts_the_standbys_timer() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_once()
    b.try_once()
    clock.now += 14
    assert a.try_once()  # renewed just before expiry
    assert not b.try_once()  # b sees the change: 15 s from now
    clock.now += 14
    assert not b.try_once()
    clock.now += 2
    assert b.try_once()


def test_renew_failures_past_the_deadline_lose_leadership() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, "a", clock)
    assert a.try_once()
    store.failing = True
    clock.now += SETTINGS.retry_period
    assert not a.try_once()
    assert a.leading.is_set()
    assert not a.lost.is_set()
    clock.now = 1000.0 + SETTINGS.renew_deadline
    assert not a.try_once()
    assert not a.leading.is_set()
    assert a.lost.is_set()
    store.failing = False
    assert not a.try_once()  # a lost elector never leads again: the process restarts


def test_a_leader_that_sees_another_holder_stops_leading_at_once() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, "a", clock)
    assert a.try_once()
    assert store.record is not None
    store.record = dataclasses.replace(store.record, holder="intruder")
    store.version += 1
    clock.now += SETTINGS.retry_period
    assert not a.try_once()
    assert a.lost.is_set()
    assert not a.leading.is_set()


def test_release_lets_the_standby_take_over_at_its_next_try() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_once()
    b.try_once()
    a.release()
    assert not a.leading.is_set()
    assert not a.lost.is_set()
    assert store.record is not None
    assert (store.record.holder, store.record.lease_duration) == ("", 1)
    clock.now += SETTINGS.retry_period
    assert b.try_once()
    assert not a.try_once()  # released: it does not take the Lease back
    assert store.writes == ["a", "", "b"]


def test_release_when_not_leading_writes_nothing() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_once()
    b.try_once()
    b.release()
    assert store.writes == ["a"]


def test_a_lost_race_is_an_answer_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Two electors that both find no Lease: one create wins, the other's 409 is just 'no'."""
    store, clock = FakeLeases(), Clock()
    a = elector(store, "a", clock)

    class Racing(FakeLeases):
        def get(self, namespace: str, name: str) -> tuple[leader.LeaseRecord, str] | None:
            found = store.get(namespace, name)
            if found is None:
                a.try_once()  # a creates between b's read and b's create
            return found

        def create(self, namespace: str, name: str, record: leader.LeaseRecord) -> str | None:
            return store.create(namespace, name, record)

    b = elector(Racing(), "b", clock)
    with caplog.at_level("WARNING", logger="gitwarden.leader"):
        assert b.try_once() is False
    assert not b.lost.is_set()
    assert not b.leading.is_set()
    assert caplog.records == []
    assert store.writes == ["a"]


def test_an_update_conflict_loses_the_takeover_race_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = FakeLeases(), Clock()
    store.record = leader.LeaseRecord(holder="", lease_duration=1)
    a = elector(store, "a", clock)

    class Racing(FakeLeases):
        def get(self, namespace: str, name: str) -> tuple[leader.LeaseRecord, str] | None:
            found = store.get(namespace, name)
            a.try_once()  # a takes the free Lease between b's read and b's update
            return found

        def update(
            self, namespace: str, name: str, record: leader.LeaseRecord, resource_version: str
        ) -> str | None:
            return store.update(namespace, name, record, resource_version)

    b = elector(Racing(), "b", clock)
    with caplog.at_level("WARNING", logger="gitwarden.leader"):
        assert b.try_once() is False
    assert caplog.records == []
    assert store.record is not None
    assert store.record.holder == "a"


def test_a_store_error_while_standing_by_is_retried_not_raised() -> None:
    store, clock = FakeLeases(), Clock()
    store.failing = True
    a = elector(store, "a", clock)
    assert a.try_once() is False
    store.failing = False
    assert a.try_once() is True


def test_run_in_threads_elects_one_and_hands_over_on_release() -> None:
    """The blocking loop with real time and short periods: one leader, then a handover."""
    fast = controlconfig.LeaderConfig(lease_duration=1.0, renew_deadline=0.6, retry_period=0.05)
    store = FakeLeases()
    electors = [leader.Elector(store, NS, NAME, h, fast) for h in ("a", "b")]
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=e.run, args=(s,), daemon=True)
        for e, s in zip(electors, stops, strict=False)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while not any(e.leading.is_set() for e in electors):
        assert time.monotonic() < deadline, "nobody leads"
        time.sleep(0.01)
    time.sleep(0.3)  # several renewals
    assert sum(e.leading.is_set() for e in electors) == 1
    first = next(i for i, e in enumerate(electors) if e.leading.is_set())
    other = electors[1 - first]
    stops[first].set()
    threads[first].join(2)
    released_at = time.monotonic()
    electors[first].release()
    assert other.leading.wait(2)
    # Released, the standby needs at most one retry period (plus scheduling), not a lease.
    assert time.monotonic() - released_at < fast.lease_duration
    stops[1 - first].set()
    threads[1 - first].join(2)
    assert not any(t.is_alive() for t in threads)


def test_holder_identity_is_the_host_and_a_random_suffix() -> None:
    one, two = leader.holder_identity(), leader.holder_identity()
    assert one != two
    host, _, suffix = one.rpartition("_")
    assert host
    assert len(suffix) == 10


def test_release_after_a_renewal_whose_answer_was_lost_still_frees_the_lease() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, "a", clock)
    a.try_once()
    store.version += 1  # our renewal was written, but we never heard the new resourceVersion
    a.release()
    assert store.record is not None
    assert store.record.holder == ""


def test_release_never_frees_a_lease_someone_else_holds_now() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, "a", clock)
    a.try_once()
    assert store.record is not None
    store.record = dataclasses.replace(store.record, holder="b")
    store.version += 1
    a.release()
    assert store.record.holder == "b"
    assert store.writes == ["a"]


def test_a_renewal_stuck_in_its_request_stops_leading_at_the_deadline() -> None:
    """The adapter's request timeout can exceed the Lease: a hung renewal must not keep
    `leading` set past renew_deadline, when a standby may already lead."""
    fast = controlconfig.LeaderConfig(lease_duration=1.0, renew_deadline=0.4, retry_period=0.1)
    store, release_hang = FakeLeases(), threading.Event()

    class Hanging(FakeLeases):
        hang = False

        def get(self, namespace: str, name: str) -> tuple[leader.LeaseRecord, str] | None:
            if self.hang:
                release_hang.wait(10)
            return store.get(namespace, name)

        def create(self, namespace: str, name: str, record: leader.LeaseRecord) -> str | None:
            return store.create(namespace, name, record)

        def update(
            self, namespace: str, name: str, record: leader.LeaseRecord, resource_version: str
        ) -> str | None:
            return store.update(namespace, name, record, resource_version)

    hanging = Hanging()
    a = leader.Elector(hanging, NS, NAME, "a", fast)
    assert a.try_once()
    hanging.hang = True
    worker = threading.Thread(target=a.try_once, daemon=True)
    started = time.monotonic()
    worker.start()
    assert a.lost.wait(2)
    assert not a.leading.is_set()
    assert time.monotonic() - started < fast.lease_duration
    assert worker.is_alive()  # the request is still stuck: the watchdog did not wait for it
    release_hang.set()
    worker.join(2)
    assert not a.leading.is_set()  # the late answer does not bring leadership back
