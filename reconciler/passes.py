"""One pass of the long-running reconciler and everything reported about it.

Owns the order around `pipeline.prepare` / `pipeline.execute`: the write-ahead status (the
Sync is Reconciling and its inventory is previous + planned before the first object is
applied, whenever the pass may change something), then the status rendered from the outcome,
the Event, the metrics and the log lines. It turns every outcome into a `loop.Outcome` and the
stall key's tip, which `reconciler.loop` schedules; it owns no schedule and no retries.

Never lets an error's text out unless it is ours (`ReconcileError` messages name objects,
never contents); anything else is reported by its type only and treated as Transient (the
process keeps running, backing off). Must not import the kubernetes client.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Protocol

from reconciler import (
    applyplan,
    changeset,
    config,
    errors,
    events,
    logs,
    loop,
    pipeline,
    status,
    verify,
    wiring,
)

log = logs.get("loop")


class Metrics(Protocol):
    """What a pass reports to `reconciler.metrics.Metrics`."""

    def pass_finished(self, seconds: float, result: str) -> None: ...

    def applied(self, changes: changeset.ChangeSet) -> None: ...

    def verification_failed(self, reason: str) -> None: ...

    def revision(self, commit: str) -> None: ...


class Unexpected(errors.Transient):
    """An error that is not a ReconcileError: a bug or a library failure, by its type only."""


@dataclasses.dataclass(frozen=True)
class Result:
    """What the loop needs from a pass: the outcome, the new `last`, the tip it saw."""

    outcome: loop.Outcome
    applied: pipeline.Applied | None
    tip: str | None
    seconds: float
    partial: changeset.ChangeSet = dataclasses.field(default_factory=changeset.ChangeSet)
    """What a failed pass did before it stopped (drift repair must not undo it)."""


class Runner:
    """Runs passes for one process, reporting each to status, Events, metrics and logs."""

    def __init__(
        self,
        process: wiring.Process,
        settings: config.ReconcilerConfig,
        recorder: events.Recorder,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._process, self.settings = process, settings
        self._recorder, self._metrics = recorder, metrics
        self._clock, self._now = clock, now

    def reload(self, settings: config.ReconcilerConfig, process: wiring.Process) -> None:
        """Use new settings and ports from the next pass on (the worker thread calls this)."""
        self.settings, self._process = settings, process

    def tip(self) -> str:
        """The branch tip on the remote, for the stalled loop's cheap check."""
        return wiring.GitSource(self.settings.source).tip()

    def run(self, last: pipeline.Applied | None) -> Result:
        """One pass from `last` (None: the first of this process, verified from the anchor)."""
        started, now = self._clock(), self._now()
        planned: pipeline.Planned | None = None
        try:
            planned = pipeline.prepare(self._process.ports, self.settings, last, now)
            if may_change(planned.plan):
                self._write(status.progressing(planned.plan), now)
                commit = planned.verified.commit
                log.info(f"applying {commit[:12]}", extra={"revision": commit, "stage": "apply"})
            applied = pipeline.execute(planned, self._process.ports, dry_run=False)
            self._succeeded(applied, now, started)
        except errors.ReconcileError as exc:
            return self._failed(exc, planned, started, now)
        except Exception as exc:  # the process must outlive a bug in one pass
            error = Unexpected(f"internal error ({type(exc).__name__})")
            return self._failed(error, planned, started, now)
        seconds = self._clock() - started
        self._metrics.pass_finished(seconds, "applied")
        return Result(loop.Succeeded(), applied, applied.commit, seconds)

    def _succeeded(self, applied: pipeline.Applied, now: datetime.datetime, started: float) -> None:
        outcome = status.succeeded(applied.plan, applied.changes, applied.warnings)
        self._metrics.applied(applied.changes)
        self._metrics.revision(applied.commit)
        for warning in outcome.warnings:
            log.warning(warning, extra={"revision": applied.commit})
        for change in applied.changes.changes:
            if change.action is not changeset.Action.UNCHANGED:
                log.info(str(change), extra={"revision": applied.commit, "object": str(change.ref)})
        summary = applied.changes.summary()
        # The status write is part of the pass: if it fails, the pass is retried (Transient),
        # and the next pass finds every object unchanged.
        self._write(outcome, now)
        log.info(
            f"applied {applied.commit[:12]}: {summary}",
            extra={
                "revision": applied.commit,
                "summary": summary,
                "result": "applied",
                "seconds": round(self._clock() - started, 3),
            },
        )
        if applied.changes.changed:
            self._event(events.applied(applied.commit, summary), now)

    def _failed(
        self,
        exc: errors.ReconcileError,
        planned: pipeline.Planned | None,
        started: float,
        now: datetime.datetime,
    ) -> Result:
        refused = exc.tip if isinstance(exc, pipeline.RevisionRefused) else None
        tip = refused or (planned.verified.commit if planned is not None else None)
        kind = "transient" if isinstance(exc, errors.Transient) else "stalled"
        reason = status.reason_of(exc)
        seconds = self._clock() - started
        self._metrics.pass_finished(seconds, kind)
        if isinstance(exc, verify.VerificationFailed):
            # One count per distinct reason (the metric maps the text onto its codes).
            for why in dict.fromkeys(why for _, why in exc.failures) or (str(exc),):
                self._metrics.verification_failed(why)
        plan = planned.plan if planned is not None else None
        try:
            self._write(status.failed(exc, plan, attempted=refused), now)
        except errors.ReconcileError as write_error:
            log.error(f"the Sync status was not written: {write_error}")  # noqa: TRY400
        log.warning(
            f"pass {kind}: {exc}",
            extra={
                "revision": tip or "",
                "reason": reason,
                "result": kind,
                "seconds": round(seconds, 3),
            },
        )
        if kind == "stalled":
            self._event(events.stalled(reason, str(exc)), now)
        partial = getattr(exc, "changes", None)
        if not isinstance(partial, changeset.ChangeSet):
            partial = changeset.ChangeSet()
        return Result(exc, None, tip, seconds, partial)

    def _write(self, outcome: status.Outcome, now: datetime.datetime) -> None:
        self._process.target.write_status(self.settings.identity.name, outcome, now)

    def _event(self, event: events.Event, now: datetime.datetime) -> None:
        try:
            self._recorder.record(event, now)
        except errors.ReconcileError as exc:
            log.warning(f"Event {event.reason} not recorded: {exc}")


def may_change(plan: applyplan.ApplyPlan) -> bool:
    """Whether the pass may create, change or delete anything, as far as the plan can tell.

    A new revision, anything to prune, a new object or one whose desired state differs from
    the inventory's. An object edited in the cluster since is not seen here: it is already in
    the inventory, so a pass killed while repairing it orphans nothing.
    """
    previous = plan.previous.entries
    if plan.prune or plan.revision.commit != plan.previous.commit:
        return True
    return any(
        obj.ref not in previous
        or previous[obj.ref].digest != obj.digest
        or not previous[obj.ref].resource_version
        for obj in plan.objects()
    )
