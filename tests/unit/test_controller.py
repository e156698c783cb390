"""The controller's threads with fakes of our own ports: one worker, the Lease, stop and loss."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from typing import Any

from reconciler import changeset, cluster_errors, config, controlconfig, controller, loop, passes

SETTINGS = config.ReconcilerConfig(
    source=config.SourceConfig(url="https://git.example.test/repo.git"),
    trust=config.TrustConfig(anchor="a" * 40),
    loop=controlconfig.LoopConfig(interval=0.2, jitter=0.0, retry_base=0.05, retry_max=0.1),
)
TIP = "b" * 40


def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


@dataclasses.dataclass
class Runner:
    """Passes that take `seconds` and end in `outcome`; records when each ran."""

    seconds: float = 0.0
    outcome: loop.Outcome = dataclasses.field(default_factory=loop.Succeeded)
    log: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    gate: threading.Event | None = None

    def run(self, last: Any) -> passes.Result:
        self.log.append(("pass-start", time.monotonic()))
        if self.gate is not None:
            self.gate.wait(5.0)
        time.sleep(self.seconds)
        self.log.append(("pass-end", time.monotonic()))
        ok = isinstance(self.outcome, loop.Succeeded)
        return passes.Result(self.outcome, object() if ok else None, TIP, self.seconds)

    def reload(self, settings: Any, process: Any) -> None:
        raise AssertionError("not reloaded: the files did not change")

    @property
    def passes(self) -> int:
        return sum(1 for what, _ in self.log if what == "pass-start")


@dataclasses.dataclass
class Repairer:
    log: list[tuple[str, float]]
    tracked: int = 0

    def track(self, applied: Any) -> None:
        self.tracked += 1

    def forget(self, changes: changeset.ChangeSet) -> None: ...

    def handle(self, event: Any) -> None:
        self.log.append((f"repair-{event}", time.monotonic()))


class Metrics:
    def __init__(self) -> None:
        self.leader: list[bool] = []

    def pass_finished(self, seconds: float, result: str) -> None: ...
    def applied(self, changes: changeset.ChangeSet) -> None: ...
    def verification_failed(self, reason: str) -> None: ...
    def revision(self, commit: str) -> None: ...
    def drift_repaired(self, kind: str) -> None: ...

    def leading(self, is_leader: bool) -> None:
        self.leader.append(is_leader)


class Elector:
    def __init__(self) -> None:
        self.leading = threading.Event()
        self.lost = threading.Event()
        self.released = False

    def run(self, stop: threading.Event) -> None:
        stop.wait()

    def release(self) -> None:
        self.released = True


def build(runner: Runner, **parts: Any) -> tuple[controller.Controller, threading.Event]:
    stop = threading.Event()
    built = controller.Parts(
        runner=runner,
        recorder=parts.pop("recorder", None),  # no Events here
        metrics=parts.pop("metrics", Metrics()),
        tip=parts.pop("tip", lambda: TIP),
        digest=lambda: "files",
        random=lambda: 0.0,
        **parts,
    )
    return controller.Controller(SETTINGS, built, stop), stop


def running(control: controller.Controller) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(control.run()), daemon=True)
    thread.start()
    return thread, codes


def test_pushes_during_a_pass_are_one_more_pass_and_the_interval_still_runs() -> None:
    gate = threading.Event()
    runner = Runner(gate=gate)
    control, _ = build(runner)
    thread, codes = running(control)
    eventually(lambda: runner.passes == 1)
    for _ in range(5):
        control.push()  # while the first pass waits at the gate
    gate.set()
    eventually(lambda: runner.passes >= 2)
    second = [t for what, t in runner.log if what == "pass-start"][1]
    first_end = next(t for what, t in runner.log if what == "pass-end")
    assert second - first_end < 0.1  # at once, not after the interval
    time.sleep(0.1)
    assert runner.passes == 2  # five pushes, one pass
    eventually(lambda: runner.passes == 3, 2.0)  # then the interval
    control.stop()
    thread.join(5)
    assert codes == [controller.EXIT_STOPPED]


def test_drift_events_wait_for_the_pass_on_the_same_worker() -> None:
    runner = Runner(seconds=0.3)
    repairer = Repairer(runner.log)
    control, _ = build(runner, repairer=repairer, event_key=str)
    thread, _codes = running(control)
    eventually(lambda: runner.passes == 1)
    control._enqueue("cm-a")  # what the watches' sink does
    control._enqueue("cm-a")
    eventually(lambda: any(what.startswith("repair") for what, _ in runner.log))
    order = [what for what, _ in runner.log]
    assert order[:3] == ["pass-start", "pass-end", "repair-cm-a"]  # after the pass, once
    assert repairer.tracked == 1  # the desired state swapped before the repair
    control.stop()
    thread.join(5)


def test_a_standby_runs_nothing_and_the_leader_releases_the_lease_on_stop() -> None:
    runner, elector, metrics = Runner(), Elector(), Metrics()
    control, _ = build(runner, elector=elector, metrics=metrics)
    thread, codes = running(control)
    time.sleep(0.3)
    assert runner.passes == 0
    elector.leading.set()
    eventually(lambda: runner.passes >= 1)
    control.stop()
    thread.join(5)
    assert codes == [controller.EXIT_STOPPED]
    assert elector.released
    assert metrics.leader == [True, False]


def test_losing_the_lease_mid_pass_exits_at_once_without_waiting_for_the_pass() -> None:
    runner, elector = Runner(seconds=30.0), Elector()
    elector.leading.set()
    control, _ = build(runner, elector=elector)
    thread, codes = running(control)
    eventually(lambda: runner.passes == 1)
    lost = time.monotonic()
    elector.lost.set()
    thread.join(2)
    assert codes == [controller.EXIT_LOST]
    assert time.monotonic() - lost < 1.0
    assert control.busy  # the pass is still running: the entry point exits with os._exit


def test_a_stalled_tip_is_checked_cheaply_until_it_moves() -> None:
    refused = cluster_errors.Invalid("apply ConfigMap a/b: HTTP 422 (Invalid)")  # Git's object
    runner = Runner(outcome=refused)
    tips = [TIP] * 5 + ["c" * 40]
    checked: list[str] = []

    def tip() -> str:
        checked.append(tips[min(len(checked), len(tips) - 1)])
        return checked[-1]

    control, _ = build(runner, tip=tip)
    thread, _codes = running(control)
    eventually(lambda: runner.passes == 2, 5.0)
    assert len(checked) == 6  # five checks saw the same tip; the sixth a new one
    control.stop()
    thread.join(5)


def test_a_pass_stalled_by_the_cluster_is_run_again_on_the_backoff_without_a_new_tip() -> None:
    runner = Runner(outcome=cluster_errors.Forbidden("apply LimitRange a/b: HTTP 403"))
    checked: list[str] = []

    def tip() -> str:
        checked.append(TIP)
        return TIP

    control, _ = build(runner, tip=tip)
    thread, _codes = running(control)
    # interval 0.2 s, then 0.4 s (jitter 0): three passes within about 0.6 s, no tip check.
    eventually(lambda: runner.passes >= 3, 3.0)
    runner.outcome = loop.Succeeded()  # an administrator fixed the RBAC
    eventually(lambda: runner.passes >= 4, 3.0)
    control.stop()
    thread.join(5)
    assert checked == []
    starts = [t for what, t in runner.log if what == "pass-start"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 0.19 < gaps[0] < 0.35, gaps  # loop.interval
    assert 0.39 < gaps[1] < 0.55, gaps  # doubled


@dataclasses.dataclass
class Guard:
    log: list[tuple[str, float]]

    def run(self) -> None:
        self.log.append(("guard", time.monotonic()))


class GuardWatch:
    def __init__(self, wake: Any) -> None:
        self.wake = wake
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_the_self_guard_runs_after_every_pass_and_at_once_when_its_watch_wakes_the_worker() -> None:
    runner = Runner()
    guard = Guard(runner.log)
    watches: list[GuardWatch] = []

    def watch(wake: Any) -> GuardWatch:
        watches.append(GuardWatch(wake))
        return watches[-1]

    control, _ = build(runner, guard=guard, guard_watch=watch)
    thread, _codes = running(control)
    eventually(lambda: runner.passes == 1 and len(watches) == 1)
    eventually(lambda: [w for w, _ in runner.log][:3] == ["pass-start", "pass-end", "guard"])
    before = sum(1 for what, _ in runner.log if what == "guard")
    woken = time.monotonic()
    watches[0].wake()  # the webhook configuration changed
    watches[0].wake()  # twice: coalesced, one look
    eventually(lambda: sum(1 for what, _ in runner.log if what == "guard") > before)
    first = next(t for what, t in runner.log if what == "guard" and t >= woken)
    assert first - woken < 0.1  # not at the next pass (0.2 s)
    control.stop()
    thread.join(5)
    assert watches[0].stopped


def test_a_standby_neither_guards_nor_watches_the_webhook_configuration() -> None:
    runner, elector = Runner(), Elector()
    guard = Guard(runner.log)
    watches: list[GuardWatch] = []

    def watch(wake: Any) -> GuardWatch:
        watches.append(GuardWatch(wake))
        return watches[-1]

    control, _ = build(runner, elector=elector, guard=guard, guard_watch=watch)
    thread, _codes = running(control)
    time.sleep(0.3)
    assert runner.log == []
    assert watches == []
    control.stop()
    thread.join(5)
