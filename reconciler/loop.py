"""The loop's schedule: after an outcome, what runs next and when.

Owns the one decision of the long-running reconciler that `ReconcileError`'s two kinds exist
for (ARCHITECTURE: "one loop module turns outcomes and errors into ... the next schedule"):

* success: the next full pass after `loop.interval`, plus jitter;
* `Transient`: the same pass again after an exponential backoff from `retry_base`, doubling,
  capped at `retry_max`, plus jitter; a success resets it;
* `Stalled` in Git (a bad signature, manifest or SealedSecret): never the same pass again. The
  stall key (the refused tip commit and a digest of the configuration and trust files) is
  remembered; on the interval a cheap check (the remote's tip, `git ls-remote`) compares the
  key, and only a changed key runs a full pass. So a bad signature costs one ls-remote a
  minute, not a fetch, a verify and an apply;
* `Stalled` in the cluster (`errors.in_cluster`: RBAC forbids, a kind or namespace is missing,
  a webhook denies): the same pass again after `loop.interval`, doubling, capped at
  `loop.stall_retry_max_intervals` times the interval, plus jitter; so an administrator's fix
  is picked up with no new commit, and a stall nobody fixes costs one pass per cap (ten
  minutes by default). A success resets it; a push runs a pass at once;

and the `Inbox` the worker thread waits on: a push (coalesced: any number while a pass runs
is one more pass), drift events (coalesced by object, the newest kept) and the stop request.
The schedule is pure (a random source is passed in; time is the caller's); the inbox is the
one place threads meet. Must not run a pass, talk to the cluster or log.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from reconciler import controlconfig, errors


class Action(enum.Enum):
    """What the worker does when the wait is over."""

    RECONCILE = "reconcile"  # fetch → verify → ... → apply
    CHECK_TIP = "check-tip"  # stalled: ask the remote for the tip, compare the stall key


@dataclass(frozen=True)
class Step:
    """The next thing to do, after `delay` seconds."""

    action: Action
    delay: float


@dataclass(frozen=True)
class StallKey:
    """What a stalled pass saw; only a different key is worth a full pass.

    `tip` is the branch tip commit the pass refused (None when it failed before knowing one,
    e.g. the branch is missing); `digest` covers the configuration and trust files.
    """

    tip: str | None
    digest: str


@dataclass(frozen=True)
class Succeeded:
    """The outcome of a pass that applied its revision."""


@dataclass(frozen=True)
class State:
    """What the schedule remembers between passes."""

    failures: int = 0  # consecutive Transient failures
    stalled: StallKey | None = None  # stalled in Git: only a new key runs a pass
    cluster_stalls: int = 0  # consecutive passes stalled in the cluster


Outcome = Succeeded | errors.ReconcileError


class Schedule:
    """The rules above for one `LoopConfig`; `random()` returns a float in [0, 1)."""

    def __init__(self, settings: controlconfig.LoopConfig, random: Callable[[], float]) -> None:
        self._settings = settings
        self._random = random

    def first(self) -> Step:
        """A process starts with a pass at once."""
        return Step(Action.RECONCILE, 0.0)

    def after_pass(self, state: State, outcome: Outcome, key: StallKey) -> tuple[State, Step]:
        """The state and step after a pass; `key` is what the pass saw (used when it stalled)."""
        match outcome:
            case Succeeded():
                return State(), Step(Action.RECONCILE, self._jittered(self._settings.interval))
            case errors.Transient():
                failures = state.failures + 1
                base = self._settings.retry_base * 2.0 ** min(failures - 1, 62)
                delay = self._jittered(min(base, self._settings.retry_max))
                return State(failures=failures), Step(Action.RECONCILE, delay)
            case errors.Stalled() if errors.in_cluster(outcome):
                stalls = state.cluster_stalls + 1
                settings = self._settings
                base = settings.interval * 2.0 ** min(stalls - 1, 62)
                cap = settings.interval * settings.stall_retry_max_intervals
                delay = self._jittered(min(base, cap))
                return State(cluster_stalls=stalls), Step(Action.RECONCILE, delay)
            case errors.Stalled():
                return State(stalled=key), self._recheck()
            case _:  # a ReconcileError that is neither: the hierarchy test forbids it
                raise TypeError(f"{type(outcome).__name__} is neither Transient nor Stalled")

    def after_check(self, state: State, seen: StallKey | None) -> tuple[State, Step]:
        """After a cheap check while stalled: `seen` is the current key (None: check failed)."""
        if state.stalled is None or (seen is not None and seen != state.stalled):
            return state, Step(Action.RECONCILE, 0.0)
        return state, self._recheck()

    def on_push(self, state: State) -> Step:
        """A verified push: at once, but while stalled only the cheap check (no retry storm)."""
        return Step(Action.CHECK_TIP if state.stalled is not None else Action.RECONCILE, 0.0)

    def _recheck(self) -> Step:
        return Step(Action.CHECK_TIP, self._jittered(self._settings.interval))

    def _jittered(self, seconds: float) -> float:
        return seconds + self._random() * self._settings.jitter * seconds


K = TypeVar("K", bound=Hashable)
E = TypeVar("E")


class Wake(enum.Enum):
    """Why `Inbox.wait` returned."""

    STOP = "stop"
    EVENTS = "events"
    PUSH = "push"
    TIMEOUT = "timeout"


@dataclass
class Inbox(Generic[K, E]):
    """Where pushes, drift events and the stop request meet the one worker thread.

    Pushes are a flag, not a queue: ten pushes during a pass are one pass after it. Events are
    kept by key (the object), the newest replacing an older one, so a burst of edits to one
    object is one repair. `clock` is `time.monotonic` except in tests.
    """

    clock: Callable[[], float] = time.monotonic
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _pushed: bool = False
    _stopped: bool = False
    _events: dict[K, E] = field(default_factory=dict)

    def push(self) -> None:
        with self._cond:
            self._pushed = True
            self._cond.notify_all()

    def event(self, key: K, event: E) -> None:
        with self._cond:
            self._events.pop(key, None)  # re-inserted last: handled in arrival order
            self._events[key] = event
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        with self._cond:
            return self._stopped

    def wait(self, until: float) -> Wake:
        """Block until stop, an event, a push or the clock reaches `until` (first that holds).

        A push is taken (cleared) by the wait that returns PUSH; events by `take_events`.
        """
        with self._cond:
            while True:
                if self._stopped:
                    return Wake.STOP
                if self._events:
                    return Wake.EVENTS
                if self._pushed:
                    self._pushed = False
                    return Wake.PUSH
                left = until - self.clock()
                if left <= 0:
                    return Wake.TIMEOUT
                self._cond.wait(left)

    def take_push(self) -> bool:
        """Whether a push came since the last wait or take (and clear it): a pass about to
        start covers every push before it."""
        with self._cond:
            pushed, self._pushed = self._pushed, False
            return pushed

    def take_events(self) -> list[E]:
        with self._cond:
            taken = list(self._events.values())
            self._events.clear()
            return taken
