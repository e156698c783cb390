"""The loop's schedule on a fake clock with a fixed random source: backoff, stalls, pushes."""

from __future__ import annotations

import threading
import time

import pytest

from reconciler import (
    apply,
    changeset,
    cluster_errors,
    controlconfig,
    errors,
    load,
    loop,
    pipeline,
)
from reconciler.sealed import errors as sealed_errors

SETTINGS = controlconfig.LoopConfig(interval=60.0, jitter=0.1, retry_base=2.0, retry_max=300.0)
KEY = loop.StallKey(tip="a" * 40, digest="d1")
BUSY = cluster_errors.Busy("apply ConfigMap a/b: HTTP 503")
REFUSED = pipeline.RevisionRefused("revision refused", (("a" * 40, "unsigned"),), "a" * 40)
FORBIDDEN = cluster_errors.Forbidden("apply LimitRange a/b: HTTP 403 Forbidden (Forbidden)")


def wrapped(cause: errors.ReconcileError) -> apply.ApplyStalled:
    """As apply raises it (`raise ApplyStalled(...) from cause`): the adapter's error as the
    stage's wrapper's cause."""
    error = apply.ApplyStalled(cause, changeset.ChangeSet())
    error.__cause__ = cause
    return error


def schedule(random: float = 0.5) -> loop.Schedule:
    return loop.Schedule(SETTINGS, lambda: random)


def test_a_success_runs_the_next_pass_after_the_interval_plus_jitter() -> None:
    for random, expected in ((0.0, 60.0), (0.5, 63.0), (0.999, 65.994)):
        state, step = schedule(random).after_pass(loop.State(failures=3), loop.Succeeded(), KEY)
        assert state == loop.State()
        assert step.action is loop.Action.RECONCILE
        assert step.delay == pytest.approx(expected)


def test_transient_failures_back_off_doubling_to_the_cap_and_a_success_resets() -> None:
    plan = schedule(0.0)
    state, delays = loop.State(), []
    for _ in range(12):
        state, step = plan.after_pass(state, BUSY, KEY)
        assert step.action is loop.Action.RECONCILE
        delays.append(step.delay)
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]
    assert state.failures == 12
    # Jitter rides on top of each wait, the capped one too (at most jitter times the wait).
    _, jittered = schedule(0.999).after_pass(state, BUSY, KEY)
    assert 300.0 < jittered.delay <= 330.0
    state, step = plan.after_pass(state, loop.Succeeded(), KEY)
    assert state.failures == 0
    _, again = plan.after_pass(state, BUSY, KEY)
    assert again.delay == 2.0


@pytest.mark.parametrize(
    "error",
    [
        FORBIDDEN,  # RBAC (or a webhook's denial) that an administrator may fix
        cluster_errors.NotFound("apply ConfigMap gone/a: HTTP 404 Not Found (NotFound)"),
        cluster_errors.NotServed("the API server serves no resource for kind Widget"),
        wrapped(FORBIDDEN),  # how apply raises it
        wrapped(cluster_errors.NotFound("apply ConfigMap gone/a: HTTP 404")),
    ],
    ids=["forbidden", "not-found", "not-served", "apply-forbidden", "apply-not-found"],
)
def test_a_stall_caused_in_the_cluster_is_retried_from_the_interval_doubling_to_the_cap(
    error: errors.ReconcileError,
) -> None:
    plan = schedule(0.0)
    state, delays = loop.State(), []
    for _ in range(7):
        state, step = plan.after_pass(state, error, KEY)
        assert step.action is loop.Action.RECONCILE  # a full pass: no new commit needed
        delays.append(step.delay)
    # From loop.interval (60 s), doubling, capped at stall_retry_max_intervals (10) intervals.
    assert delays == [60, 120, 240, 480, 600, 600, 600]
    assert state.stalled is None
    # A push (someone says "fixed") runs a pass at once; a success resets the backoff.
    assert plan.on_push(state) == loop.Step(loop.Action.RECONCILE, 0.0)
    state, _ = plan.after_pass(state, loop.Succeeded(), KEY)
    assert state == loop.State()
    assert plan.after_pass(state, error, KEY)[1].delay == 60.0


@pytest.mark.parametrize(
    "error",
    [
        REFUSED,  # a bad signature
        load.LoadError("abc123 app.yaml line 3: not valid YAML"),  # a bad manifest
        sealed_errors.DecryptionError("a/b", (sealed_errors.Failure(None, "no key opens it"),)),
        cluster_errors.Invalid("apply ConfigMap a/b: HTTP 422 (Invalid)"),  # Git's object
        cluster_errors.Immutable("apply Job a/b: HTTP 422: invalid spec.template"),
        cluster_errors.Rejected("apply ConfigMap a/b: HTTP 400 Bad Request"),
        wrapped(cluster_errors.Invalid("apply ConfigMap a/b: HTTP 422 (Invalid)")),
    ],
    ids=["signature", "manifest", "sealed", "invalid", "immutable", "rejected", "apply-invalid"],
)
def test_a_stall_caused_in_git_is_never_retried_on_a_timer(error: errors.ReconcileError) -> None:
    plan = schedule()
    state, step = plan.after_pass(loop.State(cluster_stalls=3), error, KEY)
    assert state == loop.State(stalled=KEY)
    assert step.action is loop.Action.CHECK_TIP
    for _ in range(100):
        state, step = plan.after_check(state, KEY)
        assert step.action is loop.Action.CHECK_TIP


def test_a_cluster_stall_with_a_short_cap_holds_at_the_interval_times_the_cap() -> None:
    settings = controlconfig.LoopConfig(interval=2.0, jitter=0.5, stall_retry_max_intervals=3)
    plan = loop.Schedule(settings, lambda: 0.999)
    state, delays = loop.State(), []
    for _ in range(5):
        state, step = plan.after_pass(state, FORBIDDEN, KEY)
        delays.append(step.delay)
    assert delays == pytest.approx([2 * 1.4995, 4 * 1.4995, 6 * 1.4995, 6 * 1.4995, 6 * 1.4995])


def test_an_hour_of_an_unfixed_cluster_stall_costs_a_handful_of_passes() -> None:
    plan, now, state, passes = schedule(0.0), 0.0, loop.State(), 0
    while now < 3600.0:
        state, step = plan.after_pass(state, FORBIDDEN, KEY)
        passes += 1
        now += step.delay
    # 60, 120, 240, 480, then every 600 s: no retry storm.
    assert passes == 9


def test_the_classification_follows_the_cause_chain_and_defaults_to_git() -> None:
    assert errors.in_cluster(wrapped(FORBIDDEN))
    assert not errors.in_cluster(REFUSED)
    assert not errors.in_cluster(errors.Stalled("?"))
    assert not errors.in_cluster(cluster_errors.Busy("503"))  # Transient: not a stall at all


def test_a_thousand_failures_do_not_overflow_the_backoff() -> None:
    state, step = loop.State(failures=1000), None
    state, step = schedule(0.0).after_pass(state, BUSY, KEY)
    assert step.delay == 300.0


def test_a_stalled_pass_is_not_retried_until_the_tip_or_the_configuration_changes() -> None:
    plan = schedule()
    state, step = plan.after_pass(loop.State(failures=2), REFUSED, KEY)
    assert state == loop.State(stalled=KEY)
    assert step.action is loop.Action.CHECK_TIP
    assert step.delay == pytest.approx(63.0)
    # Same tip, same files: check again later, no pass.
    assert plan.after_check(state, KEY)[1].action is loop.Action.CHECK_TIP
    # The check failed (remote away): still no pass.
    assert plan.after_check(state, None)[1].action is loop.Action.CHECK_TIP
    # A new tip, or new configuration or trust files: a full pass at once.
    for seen in (loop.StallKey("b" * 40, "d1"), loop.StallKey("a" * 40, "d2")):
        _, step = plan.after_check(state, seen)
        assert step == loop.Step(loop.Action.RECONCILE, 0.0)


def test_one_hour_of_a_stalled_tip_costs_no_pass_only_cheap_checks() -> None:
    """A driver like the controller's worker, on a fake clock, with a push now and then."""
    plan, now = schedule(), 0.0
    state, step = plan.after_pass(loop.State(), REFUSED, KEY)
    runs: list[loop.Action] = []
    pushes = {600.0, 1800.0, 1801.0}
    while now < 3600.0:
        due = now + step.delay
        pushed = [t for t in sorted(pushes) if now <= t < due]
        if pushed:
            now = pushed[0]
            pushes.discard(now)
            step = plan.on_push(state)
        now += step.delay
        runs.append(step.action)
        state, step = plan.after_check(state, KEY)  # the remote still shows the refused tip
    assert loop.Action.RECONCILE not in runs
    assert 55 <= runs.count(loop.Action.CHECK_TIP) <= 65  # ~one a minute, plus the pushes


def test_a_push_runs_a_pass_at_once_unless_stalled() -> None:
    plan = schedule()
    assert plan.on_push(loop.State()) == loop.Step(loop.Action.RECONCILE, 0.0)
    assert plan.on_push(loop.State(failures=4)) == loop.Step(loop.Action.RECONCILE, 0.0)
    assert plan.on_push(loop.State(stalled=KEY)) == loop.Step(loop.Action.CHECK_TIP, 0.0)


def test_an_error_of_neither_kind_is_refused_loudly() -> None:
    with pytest.raises(TypeError, match="neither"):
        schedule().after_pass(loop.State(), errors.ReconcileError("?"), KEY)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pushes_during_a_pass_are_one_more_pass() -> None:
    inbox: loop.Inbox[str, str] = loop.Inbox(clock=FakeClock())
    inbox.push()
    assert inbox.take_push()  # the pass about to start covers it
    for _ in range(5):
        inbox.push()  # while the pass runs
    assert inbox.wait(until=0.0) is loop.Wake.PUSH
    assert inbox.wait(until=0.0) is loop.Wake.TIMEOUT
    assert not inbox.take_push()


def test_events_are_coalesced_by_object_and_stop_wins() -> None:
    inbox: loop.Inbox[str, str] = loop.Inbox(clock=FakeClock())
    for key, event in (("cm/a", "edit-1"), ("cm/b", "edit-1"), ("cm/a", "edit-2")):
        inbox.event(key, event)
    inbox.push()
    assert inbox.wait(until=0.0) is loop.Wake.EVENTS
    assert inbox.take_events() == ["edit-1", "edit-2"]  # b, then a's newest
    assert inbox.wait(until=0.0) is loop.Wake.PUSH
    inbox.event("cm/c", "edit")
    inbox.stop()
    assert inbox.wait(until=1e9) is loop.Wake.STOP
    assert inbox.stopped


def test_a_push_from_another_thread_wakes_a_long_wait() -> None:
    inbox: loop.Inbox[str, str] = loop.Inbox()
    timer = threading.Timer(0.05, inbox.push)
    timer.start()
    try:
        assert inbox.wait(until=time.monotonic() + 30) is loop.Wake.PUSH
    finally:
        timer.cancel()
