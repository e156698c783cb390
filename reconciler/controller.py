"""The long-running reconciler: one process, one worker, a Lease, and a clean way out.

Owns the threads and their lifetimes. The main thread campaigns for the Lease (when leader
election is on), serves the endpoints, and waits for a signal or a lost Lease. A standby does
nothing else: it answers /healthz, /readyz and /metrics, serves the sealing certificate, and
campaigns. The leader starts the watches (drift events go into the worker's inbox), the key
maker and ONE worker thread that runs passes, drift repairs and the self-guard serially, so a
repair never races a pass applying a newer revision (after each successful pass the repairer
tracks what it applied). The self-guard (GitWarden's own webhook configuration,
`reconciler.webhookguard`) runs after every pass and every stalled tip check, and whenever the
watch of that one object wakes the worker.

Shutdown (SIGTERM, SIGINT): no new work is taken, apply starts no further object (requests in
flight finish), the Lease is released, exit 0. Losing the Lease while leading exits non-zero
at once, as client-go does, so nothing this process started outlives its lease; the
Deployment restarts it as a standby. A pass killed at any point leaves a record the next one
converges from (the write-ahead inventory, `reconciler.passes`).

Must not implement a pass (`reconciler.passes`) or a schedule (`reconciler.loop`).
"""

from __future__ import annotations

import datetime
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler import (
    changeset,
    config,
    errors,
    events,
    logs,
    loop,
    passes,
    pipeline,
    wiring,
)

log = logs.get("controller")

EXIT_STOPPED = 0
EXIT_LOST = 1
POLL = 0.1  # how often the main thread looks at the Lease; losing it is acted on this fast
GUARD = "self-guard"  # the inbox key (and event) of a change to the webhook configuration


class PassRunner(Protocol):
    """`reconciler.passes.Runner`: one pass with its reporting."""

    def run(self, last: pipeline.Applied | None) -> passes.Result: ...

    def reload(self, settings: config.ReconcilerConfig, process: wiring.Process) -> None: ...


class Elector(Protocol):
    leading: threading.Event
    lost: threading.Event

    def run(self, stop: threading.Event) -> None: ...

    def release(self) -> None: ...


class Repair(Protocol):
    @property
    def managers(self) -> tuple[str, ...]: ...

    def message(self) -> str: ...


class Repairer(Protocol):
    def track(self, applied: pipeline.Applied) -> None: ...

    def forget(self, changes: changeset.ChangeSet) -> None: ...

    def handle(self, event: Any) -> Repair | None: ...


class Watches(Protocol):
    def follow(self, kinds: Iterable[Any]) -> None: ...

    def stop(self) -> None: ...


class SelfGuard(Protocol):
    """`reconciler.webhookguard.Guard`: one look at the webhook configuration (and repair);
    reports itself and never raises a ReconcileError."""

    def run(self) -> object: ...


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Service(Protocol):
    """Something that runs beside the loop until `stop` is set (the key maker)."""

    def run(self, stop: threading.Event) -> None: ...


class Endpoints(Protocol):
    """`reconciler.endpoints.Endpoints`: /healthz, /readyz, /metrics and the push receiver."""

    def start(self) -> Endpoints: ...

    def stop(self) -> None: ...

    @property
    def port(self) -> int: ...

    @property
    def push_port(self) -> int | None: ...


class Metrics(passes.Metrics, Protocol):
    def drift_repaired(self, kind: str) -> None: ...

    def leading(self, is_leader: bool) -> None: ...


@dataclass
class Parts:
    """What the controller runs, built by `reconciler.controlwiring` (real) or tests (fakes)."""

    runner: PassRunner
    recorder: events.Recorder
    metrics: Metrics
    tip: Callable[[], str]
    digest: Callable[[], str]
    reload: Callable[[], tuple[config.ReconcilerConfig, wiring.Process]] | None = None
    elector: Elector | None = None
    repairer: Repairer | None = None
    watches: Callable[[Callable[[Any], None]], Watches] | None = None
    watched_kinds: Callable[[], Iterable[Any]] | None = None
    event_key: Callable[[Any], Hashable] = id
    guard: SelfGuard | None = None
    guard_watch: Callable[[Callable[[], None]], Stoppable] | None = None
    """Started by the leader: calls its argument on every change of the webhook configuration."""
    leader_services: tuple[Service, ...] = ()
    services: tuple[Service, ...] = ()
    """Run on every replica from the start (the certificate endpoint)."""
    endpoints: Callable[[Controller], Endpoints] | None = None
    random: Callable[[], float] = field(default=random.random)
    clock: Callable[[], float] = time.monotonic


class Controller:
    """Runs `parts` until stopped; `run` returns the process's exit code."""

    def __init__(self, settings: config.ReconcilerConfig, parts: Parts, stop: threading.Event):
        self._settings = settings
        self._parts = parts
        self._stop = stop  # shared with apply (wiring.build): set, no object starts
        self._inbox: loop.Inbox[Hashable, Any] = loop.Inbox(clock=parts.clock)
        self._schedule = loop.Schedule(settings.loop, parts.random)
        self._loaded_digest = parts.digest()
        self._worker: threading.Thread | None = None
        self._watches: Watches | None = None
        self._guard_watch: Stoppable | None = None
        self._endpoints: Endpoints | None = None
        self._campaign = threading.Event()
        self.passes = 0  # for /readyz detail and tests

    # ------------------------------------------------------------------------ outside calls

    def push(self) -> None:
        """A verified push: a pass at once (coalesced with pushes during the current one)."""
        self._inbox.push()

    def stop(self) -> None:
        """The signal handler's call: stop taking work, stop apply between objects."""
        self._stop.set()
        self._inbox.stop()

    @property
    def leading(self) -> bool:
        elector = self._parts.elector
        return elector is None or elector.leading.is_set()

    @property
    def busy(self) -> bool:
        """The worker is still running (after `run` returned: it did not stop in time)."""
        return self._worker is not None and self._worker.is_alive()

    @property
    def alive(self) -> bool:
        return self._worker is None or self._worker.is_alive() or self._stop.is_set()

    # ------------------------------------------------------------------------ the main thread

    def run(self) -> int:
        """Campaign, lead, stop; EXIT_LOST when the Lease is lost while leading.

        Raises OSError when an endpoint's port cannot be bound (before anything else runs).
        """
        elector = self._parts.elector
        campaign = None
        if self._parts.endpoints is not None:
            self._endpoints = self._parts.endpoints(self).start()
            ports = {"port": self._endpoints.port, "push_port": self._endpoints.push_port}
            log.info("serving /healthz /readyz /metrics", extra=ports)
        for service in self._parts.services:
            self._spawn(service, "service")
        if elector is not None:
            # Its own stop: the Lease is renewed until the worker has stopped, then released.
            campaign = threading.Thread(target=elector.run, args=(self._campaign,), name="lease")
            campaign.daemon = True
            campaign.start()
            log.info("standby: campaigning for the Lease")
            while not elector.leading.wait(POLL):
                if self._stop.is_set():
                    return self._shutdown(campaign)
        self._parts.metrics.leading(True)
        log.info("leading: starting the worker")
        self._lead()
        while not self._stop.wait(POLL):
            if elector is not None and elector.lost.is_set():
                self._parts.metrics.leading(False)
                log.error("lost the Lease while leading: exiting so nothing outlives it")
                return EXIT_LOST
            if self._worker is not None and not self._worker.is_alive():
                log.error("the worker stopped unexpectedly: exiting")
                return EXIT_LOST
        return self._shutdown(campaign)

    def _spawn(self, service: Service, name: str) -> None:
        thread = threading.Thread(target=service.run, args=(self._stop,), name=name)
        thread.daemon = True
        thread.start()

    def _lead(self) -> None:
        for service in self._parts.leader_services:
            self._spawn(service, "leader-service")
        if self._parts.guard is not None and self._parts.guard_watch is not None:
            self._guard_watch = self._parts.guard_watch(lambda: self._inbox.event(GUARD, GUARD))
        self._worker = threading.Thread(target=self._work, name="worker")
        # Daemon: a Lease lost mid-apply must not wait for the worker on the way out.
        self._worker.daemon = True
        self._worker.start()

    def _shutdown(self, campaign: threading.Thread | None) -> int:
        self._inbox.stop()
        elector = self._parts.elector
        if self._worker is not None:
            # Requests in flight finish within the request timeout; no new one starts. The
            # Lease is still renewed meanwhile; should it be lost, leave at once.
            deadline = time.monotonic() + self._settings.apply.request_timeout + 5.0
            while self._worker.is_alive() and time.monotonic() < deadline:
                self._worker.join(POLL)
                if elector is not None and elector.lost.is_set():
                    log.error("lost the Lease while stopping: exiting so nothing outlives it")
                    return EXIT_LOST
            if self._worker.is_alive():
                log.warning("the current pass did not stop in time; its record is write-ahead")
        if self._watches is not None:
            self._watches.stop()
        if self._guard_watch is not None:
            self._guard_watch.stop()
        if elector is not None:
            elector.release()
            self._parts.metrics.leading(False)
        self._campaign.set()
        if campaign is not None:
            campaign.join(5.0)
        if self._endpoints is not None:
            self._endpoints.stop()
        log.info("stopped")
        return EXIT_STOPPED

    # ------------------------------------------------------------------------ the worker

    def _work(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # reported by type; the main thread exits
            log.error("the worker failed", extra={"error": type(exc).__name__})  # noqa: TRY400

    def _loop(self) -> None:
        clock = self._parts.clock
        state, step = loop.State(), self._schedule.first()
        last: pipeline.Applied | None = None
        due = clock() + step.delay
        while True:
            match self._inbox.wait(due):
                case loop.Wake.STOP:
                    return
                case loop.Wake.EVENTS:
                    if not self._handle_events():
                        return
                    continue
                case loop.Wake.PUSH:
                    step = self._schedule.on_push(state)
                case loop.Wake.TIMEOUT:
                    pass
            if step.action is loop.Action.RECONCILE:
                self._inbox.take_push()  # this pass covers every push so far
                self._reload_if_changed()
                result = self._parts.runner.run(last)
                self.passes += 1
                if self._stop.is_set():
                    return
                if result.applied is not None:
                    last = result.applied
                    self._track(last)
                elif self._parts.repairer is not None and result.partial.changes:
                    # What the failed pass wrote is a newer revision's: not repaired back.
                    self._parts.repairer.forget(result.partial)
                key = loop.StallKey(result.tip, self._parts.digest())
                state, step = self._schedule.after_pass(state, result.outcome, key)
            else:
                state, step = self._schedule.after_check(state, self._check())
            self._self_guard()  # every pass, and every interval while stalled
            log.debug(f"next: {step.action.value}", extra={"delay": round(step.delay, 3)})
            due = clock() + step.delay

    def _handle_events(self) -> bool:
        """Repair drift and run the self-guard for what the watches sent; False: stopping."""
        for event in self._inbox.take_events():
            if self._stop.is_set():
                return False
            if event is GUARD:
                self._self_guard()
            else:
                self._repair(event)
        return True

    def _self_guard(self) -> None:
        guard = self._parts.guard
        if guard is None or self._stop.is_set():
            return
        try:
            guard.run()
        except Exception as exc:  # the next pass is the safety net
            log.warning("self-guard failed", extra={"error": type(exc).__name__})

    def _check(self) -> loop.StallKey | None:
        try:
            return loop.StallKey(self._parts.tip(), self._parts.digest())
        except errors.ReconcileError as exc:
            log.warning(f"tip check failed: {exc}")
            return None

    def _reload_if_changed(self) -> None:
        """Re-read the configuration and trust files when their digest changed."""
        digest = self._parts.digest()
        if digest == self._loaded_digest or self._parts.reload is None:
            return
        self._loaded_digest = digest  # a broken file is reported once, not at every pass
        try:
            settings, process = self._parts.reload()
        except errors.ReconcileError as exc:
            log.error(f"configuration not reloaded, the previous one stays: {exc}")  # noqa: TRY400
            return
        self._parts.runner.reload(settings, process)
        log.info("configuration and trust files reloaded")

    def _track(self, applied: pipeline.Applied) -> None:
        repairer = self._parts.repairer
        if repairer is None or not self._settings.loop.drift_repair:
            return
        repairer.track(applied)
        if self._parts.watches is not None and self._parts.watched_kinds is not None:
            if self._watches is None:
                self._watches = self._parts.watches(self._enqueue)
            self._watches.follow(self._parts.watched_kinds())

    def _enqueue(self, event: Any) -> None:
        self._inbox.event(self._parts.event_key(event), event)

    def _repair(self, event: Any) -> None:
        repairer = self._parts.repairer
        if repairer is None:
            return
        try:
            repair = repairer.handle(event)
        except errors.ReconcileError as exc:
            log.warning(f"drift not repaired (the next pass retries): {exc}")
            return
        except Exception as exc:  # the next full pass is the safety net
            log.warning("drift not repaired", extra={"error": type(exc).__name__})
            return
        if repair is None:
            return
        message = repair.message()
        ref = getattr(repair, "ref", None)
        kind = str(getattr(ref, "kind", "") or "")
        self._parts.metrics.drift_repaired(kind)
        log.warning(message, extra={"object": str(ref), "managers": list(repair.managers)})
        try:
            self._parts.recorder.record(events.drift_repaired(message), _now())
        except errors.ReconcileError as exc:
            log.warning(f"Event DriftRepaired not recorded: {exc}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
