"""The apply stage: an ApplyPlan written to the cluster stage by stage, then the prune set.

Owns the order (CRDs → wait Established and refresh discovery → Namespaces → other
cluster-scoped kinds → namespaced objects → prune), the bounded parallelism inside a stage,
the created / configured / unchanged decision, the recreate rule for immutable fields, the
prune-time guard, the dry-run diff, and `apply_object`, the same write for one object (drift
repair). Server-side apply always forces: GitWarden owns every
field it declares, so a field someone changed with `kubectl edit` is taken back.

No-op passes cost a request per kind, not per object: each kind is listed once (metadata
only) by the ApplySet part-of label, and an object whose planned digest equals the inventory's
and whose live resourceVersion is still the one recorded after our last apply is `unchanged`
without a request. Anything else (changed in Git, edited, deleted, or touched by a controller,
which also bumps the resourceVersion) is applied; for a status-only change that is a cheap
server-side no-op.

A stage (a wave of one) is checked before it is written: every object that is going to be
applied is first applied with `dryRun=All`, in parallel, and the first refusal (a schema
error, RBAC, an immutable field not marked for recreation, admission) stops the pass before
any object of that stage is written. Earlier stages stay applied: objects in a Namespace or of
a CRD that the same revision creates can only be checked once those exist (as in Flux).

Secrets: a Secret body exists only inside `_apply_one` while the request is built, and is
dropped there; nothing here logs, and errors name objects, never contents. On an error the
partial ChangeSet rides on the raised `ApplyStalled` / `ApplyTransient` as `changes`. Must not
talk to the API server except through the cluster adapter.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler import (
    applyplan,
    changeset,
    cluster,
    cluster_errors,
    config,
    errors,
    objectdiff,
    objectref,
    status,
)

ESTABLISHED_TIMEOUT = 60.0
RECREATE_DELETE_ATTEMPTS = 3
RECREATE_TIMEOUT = 60.0
PRUNE_STAGE = "prune"
REPAIR_STAGE = "repair"
Action = changeset.Action


class ApplyStalled(errors.Stalled):
    """The pass stopped on a Stalled error (chained); `changes` is what was done before."""

    def __init__(self, cause: errors.ReconcileError, changes: changeset.ChangeSet) -> None:
        super().__init__(str(cause))
        self.changes = changes
        self.reason = str(getattr(cause, "reason", "") or type(cause).__name__)


class ApplyTransient(errors.Transient):
    """The pass stopped on a Transient error (chained); `changes` is what was done before."""

    def __init__(self, cause: errors.ReconcileError, changes: changeset.ChangeSet) -> None:
        super().__init__(str(cause))
        self.changes = changes
        self.reason = str(getattr(cause, "reason", "") or type(cause).__name__)


class Stopped(errors.Transient):
    """The process is shutting down: no new object was started after the stop request."""


class ImmutableField(cluster_errors.Immutable):
    """An immutable field changed and the object is not marked to be recreated."""


def run(
    plan: applyplan.ApplyPlan,
    target: cluster.Cluster,
    settings: config.ApplyConfig,
    *,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> changeset.ChangeSet:
    """Apply `plan` and return what happened to each object.

    Once `stop` is set, no object is started (requests in flight finish): the pass ends with
    `ApplyTransient` (cause `Stopped`) carrying what was done, so a shutdown leaves a clean
    record between objects.

    A dry run applies nothing: it is the ChangeSet of `diff` (a dry-run apply answers with the
    live resourceVersion whether or not it would change the object, so only comparing the
    bodies tells configured from unchanged).
    """
    if dry_run:
        return objectdiff.changes_of(diff(plan, target, settings))
    done: list[changeset.Change] = []
    live = _LiveIndex(target, status.part_of_selector(plan.applyset_id))
    workers = concurrent.futures.ThreadPoolExecutor(max(settings.concurrency, 1))
    try:
        for stage in plan.stages:
            _check_stop(stop)
            live.load(obj.ref for obj in stage.objects)
            pending = [o for o in stage.objects if not _unchanged(o, plan, live)]
            # Refused objects stop the pass before anything of this stage is written.
            _run_parallel(workers, [functools.partial(_check_one, o, target) for o in pending], [])
            one = functools.partial(
                _apply_one, stage=stage.stage.value, plan=plan, target=target, live=live
            )  # fmt: skip
            results = _run_parallel(
                workers, [_unless_stopped(stop, functools.partial(one, o)) for o in stage.objects],
                done,
            )  # fmt: skip
            if stage.stage is applyplan.Stage.CRDS:
                _await_crds(stage, results, target)
        if settings.prune:
            live.load(plan.prune)
            for ref in plan.prune:
                _check_stop(stop)
                done.append(_prune_one(ref, target, live, settings, plan.applyset_id))
    except errors.Stalled as exc:
        forget_locals(exc)
        raise ApplyStalled(exc, changeset.ChangeSet(tuple(done))) from exc
    except errors.Transient as exc:
        forget_locals(exc)
        raise ApplyTransient(exc, changeset.ChangeSet(tuple(done))) from exc
    except BaseException as exc:
        forget_locals(exc)
        raise
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
    return changeset.ChangeSet(tuple(done))


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped("stopped before the next object: the process is shutting down")


def _unless_stopped(
    stop: threading.Event | None, task: Callable[[], changeset.Change]
) -> Callable[[], changeset.Change]:
    """`task`, refused once `stop` is set (checked when a worker picks it up, not when queued)."""

    def guarded() -> changeset.Change:
        _check_stop(stop)
        return task()

    return guarded


def forget_locals(exc: BaseException) -> None:
    """Clear the local variables of every finished frame in `exc`'s chain.

    Request bodies, a Secret's values among them, are locals of the frames an error passes
    through (the body dict, its JSON). A crash reporter that records frame locals, or a
    debugger, would copy them out of the traceback; this empties those frames first.
    """
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def diff(
    plan: applyplan.ApplyPlan,
    target: cluster.Cluster,
    settings: config.ApplyConfig | None = None,
) -> tuple[objectdiff.ObjectDiff, ...]:
    """What applying `plan` would change, per object, with every Secret value masked.

    Each object is applied with `dryRun=All` and the result compared with the live object;
    the prune set shows as deletions, guarded as a real prune is. Nothing in the cluster
    changes.
    """
    settings = settings or config.ApplyConfig()
    try:
        return _diff(plan, target, settings)
    except BaseException as exc:
        forget_locals(exc)  # live Secrets and dry-run results are locals here
        raise


def _diff(
    plan: applyplan.ApplyPlan, target: cluster.Cluster, settings: config.ApplyConfig
) -> tuple[objectdiff.ObjectDiff, ...]:
    found: list[objectdiff.ObjectDiff] = []
    planned_namespaces = {
        obj.ref.name for obj in plan.objects() if (obj.ref.group, obj.ref.kind) == ("", "Namespace")
    }
    for obj in plan.objects():
        try:
            live = target.read(obj.ref)
            body = obj.body_for_apply()
            try:
                result = target.apply(obj.ref, body, dry_run=True, want_body=True)
            except cluster_errors.NotFound:
                if live is not None or obj.ref.namespace not in planned_namespaces:
                    raise
                # Its namespace arrives with this revision: the API server cannot dry-run an
                # object into a namespace that does not exist yet, so the stamped body is what
                # would be created (masked like any Secret below).
                found.append(objectdiff.compare(obj.ref, None, body, created=True))
                continue
            finally:
                del body
        except cluster_errors.NotServed:
            found.append(objectdiff.ObjectDiff(obj.ref, Action.SKIPPED, "", "kind not served yet"))
            continue
        found.append(objectdiff.compare(obj.ref, live, result.body, created=result.created))
    for ref in plan.prune if settings.prune else ():
        try:
            doomed = target.read(ref)
        except cluster_errors.NotServed:
            doomed = None
        if doomed is None:
            continue
        labels = (doomed.get("metadata") or {}).get("labels") or {}
        if _not_ours(labels, settings, plan.applyset_id):
            found.append(objectdiff.ObjectDiff(ref, Action.SKIPPED, "", "no longer ours"))
        else:
            found.append(objectdiff.compare(ref, doomed, None, created=False))
    return tuple(found)


class _LiveIndex:
    """The live metadata of every labelled object of the kinds seen so far (one list each)."""

    def __init__(self, target: cluster.Cluster, selector: str) -> None:
        self._target = target
        self._selector = selector
        self._listed: set[tuple[str, str]] = set()
        self._objects: dict[objectref.ObjectRef, cluster.LiveObject] = {}

    def load(self, refs: Iterable[objectref.ObjectRef]) -> None:
        """List each not-yet-listed kind among `refs` (in this thread, before workers start)."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for ref in refs:
            wanted.setdefault((ref.group, ref.kind), set()).add(ref.namespace)
        for key, namespaces in sorted(wanted.items()):
            if key in self._listed:
                continue
            try:
                resource = self._target.resource(*key)
            except cluster_errors.NotServed:
                continue  # a kind whose CRD is not there yet (dry run) or gone (prune)
            self._objects.update(
                self._target.list_labelled(resource, self._selector, sorted(namespaces - {""}))
            )
            self._listed.add(key)

    def get(self, ref: objectref.ObjectRef) -> cluster.LiveObject | None:
        return self._objects.get(ref)


def _run_parallel(
    workers: concurrent.futures.ThreadPoolExecutor,
    tasks: list[Callable[[], changeset.Change]],
    done: list[changeset.Change],
) -> list[changeset.Change]:
    """Run `tasks`, append their Changes to `done` in task order; re-raise the first error.

    On an error nothing new starts; tasks already running finish and count as done.
    """
    futures = [workers.submit(task) for task in tasks]
    concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    if any(f.done() and f.exception() is not None for f in futures):
        for future in futures:
            future.cancel()
        concurrent.futures.wait(futures)
    results: list[changeset.Change] = []
    first: BaseException | None = None
    for future in futures:
        if future.cancelled():
            continue
        failure = future.exception()
        if failure is None:
            results.append(future.result())
        elif first is None:
            first = failure
    done.extend(results)
    if first is not None:
        raise first
    return results


def _unchanged(obj: applyplan.PlannedObject, plan: applyplan.ApplyPlan, live: _LiveIndex) -> bool:
    """Same desired state as our last apply, and nobody has written the object since."""
    recorded = plan.previous.entries.get(obj.ref)
    current = live.get(obj.ref)
    return (
        recorded is not None
        and current is not None
        and recorded.digest == obj.digest
        and recorded.resource_version == current.resource_version
    )


def _check_one(obj: applyplan.PlannedObject, target: cluster.Cluster) -> changeset.Change:
    """Apply `obj` with dryRun=All: raises what the real apply would, writes nothing."""
    body = obj.body_for_apply()
    try:
        target.apply(obj.ref, body, dry_run=True)
    except cluster_errors.Immutable as exc:
        if not obj.recreate_allowed:
            raise _immutable(obj, exc) from exc
    finally:
        del body  # a Secret's plaintext lives no longer than its request
    return changeset.Change(obj.ref, Action.UNCHANGED, "check")


def _immutable(obj: applyplan.PlannedObject, exc: cluster_errors.Immutable) -> ImmutableField:
    return ImmutableField(
        f"{obj.ref.display()} (from {obj.source}): {exc}; it is not marked to be "
        "recreated, so the change cannot be applied",
        status=exc.status,
        fields=exc.fields,
    )


def _apply_one(
    obj: applyplan.PlannedObject,
    *,
    stage: str,
    plan: applyplan.ApplyPlan,
    target: cluster.Cluster,
    live: _LiveIndex,
) -> changeset.Change:
    current = live.get(obj.ref)
    if current is not None and _unchanged(obj, plan, live):
        return changeset.Change(
            obj.ref, Action.UNCHANGED, stage, resource_version=current.resource_version
        )
    return _write(obj, target, stage, current.resource_version if current is not None else None)


def apply_object(
    obj: applyplan.PlannedObject,
    target: cluster.Cluster,
    *,
    previous_version: str | None,
    stage: str = REPAIR_STAGE,
) -> changeset.Change:
    """Server-side apply one planned object with force, as a pass would (drift repair).

    `previous_version` is the live resourceVersion the caller saw (None: the object is gone);
    the Change says created, configured or unchanged against it. An immutable field is
    recreated only when the object allows it, as in a pass. Errors are a pass's errors, with
    every frame's locals cleared (a Secret's body is one of them).
    """
    try:
        return _write(obj, target, stage, previous_version)
    except BaseException as exc:
        forget_locals(exc)
        raise


def _write(
    obj: applyplan.PlannedObject, target: cluster.Cluster, stage: str, previous: str | None
) -> changeset.Change:
    body = obj.body_for_apply()
    detail = ""
    try:
        try:
            applied = target.apply(obj.ref, body)
        except cluster_errors.Immutable as exc:
            if not obj.recreate_allowed:
                raise _immutable(obj, exc) from exc
            applied = _recreate(obj, body, target)
            detail = "recreated: an immutable field changed"
    finally:
        del body  # a Secret's plaintext lives no longer than its request
    if applied.created and not detail:
        action = Action.CREATED
    elif previous is not None and previous == applied.resource_version:
        action = Action.UNCHANGED
    else:
        action = Action.CONFIGURED
    return changeset.Change(
        obj.ref, action, stage, detail, resource_version=applied.resource_version
    )


def _recreate(
    obj: applyplan.PlannedObject, body: dict[str, Any], target: cluster.Cluster
) -> cluster.Applied:
    for attempt in range(1, RECREATE_DELETE_ATTEMPTS + 1):
        old = target.read_meta(obj.ref)
        if old is None:
            break
        try:
            target.delete(obj.ref, old)
        except cluster_errors.Conflict:
            # A controller's status write moved the resourceVersion between our read and the
            # delete: read again (the preconditions stay, so nothing else changed goes).
            if attempt == RECREATE_DELETE_ATTEMPTS:
                raise
            continue
        target.wait_gone(obj.ref, old.uid, RECREATE_TIMEOUT)
        break
    return target.apply(obj.ref, body)


def _await_crds(
    stage: applyplan.StagePlan, results: list[changeset.Change], target: cluster.Cluster
) -> None:
    """Wait until the stage's CRDs are Established and their kinds are in discovery."""
    kinds = {_crd_kind(obj) for obj in stage.objects} - {None}
    served = target.resources()
    changed = any(c.action in (Action.CREATED, Action.CONFIGURED) for c in results)
    if not changed and all(served.get(*k) is not None for k in kinds if k):
        return  # nothing new, and discovery already serves every kind
    target.wait_established((obj.ref.name for obj in stage.objects), ESTABLISHED_TIMEOUT)
    target.wait_for_kinds((k for k in kinds if k), ESTABLISHED_TIMEOUT)


def _crd_kind(obj: applyplan.PlannedObject) -> tuple[str, str] | None:
    spec = obj.body.get("spec") if obj.body is not None else None
    names = spec.get("names") if spec is not None else None
    if spec is None or names is None:
        return None
    return (str(spec.get("group") or ""), str(names.get("kind") or ""))


def _prune_one(
    ref: objectref.ObjectRef,
    target: cluster.Cluster,
    live: _LiveIndex,
    settings: config.ApplyConfig,
    applyset: str,
) -> changeset.Change:
    try:
        current = live.get(ref) or target.read_meta(ref)
    except cluster_errors.NotServed:
        return changeset.Change(ref, Action.DELETED, PRUNE_STAGE, "already gone: kind not served")
    if current is None:
        return changeset.Change(ref, Action.DELETED, PRUNE_STAGE, "already gone")
    why = _not_ours(current.labels, settings, applyset)
    if why:
        # The inventory says we applied it, but the live object is no longer marked as ours
        # (someone took it over through Git elsewhere, or by break-glass): never delete it.
        return changeset.Change(ref, Action.SKIPPED, PRUNE_STAGE, why)
    # Preconditions: if the object changed since the check above (relabelled, replaced), the
    # delete fails with 409 rather than deleting something the check did not see.
    deleted = target.delete(ref, current)
    return changeset.Change(ref, Action.DELETED, PRUNE_STAGE, "" if deleted else "already gone")


def _not_ours(labels: Mapping[str, Any], settings: config.ApplyConfig, applyset: str) -> str:
    """Why a live object may not be pruned by this ApplySet ("" when it may).

    Both labels must still say so: the managed label alone is shared by every GitWarden Sync,
    so an object another Sync (another path of the same repository, another shard) applied
    since, or relabelled to its set, would otherwise be deleted by this one.
    """
    if labels.get(settings.managed_label_key) != settings.managed_label_value:
        return f"no longer labelled {settings.managed_label_key}={settings.managed_label_value}"
    if labels.get(status.APPLYSET_PART_OF_LABEL) != applyset:
        return f"{status.APPLYSET_PART_OF_LABEL} names another ApplySet"
    return ""
