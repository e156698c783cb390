"""The Sync status object: rendered once from a pass's outcome, and the inventory's compact form.

Owns the shape of `syncs.gitwarden.dev` (a cluster-scoped ApplySet parent named
`identity.name`): the kstatus conditions Ready / Reconciling / Stalled, the last applied commit
and signer, the ChangeSet summary, warnings, and the inventory. `render` is pure: it takes the
outcome (success with its ChangeSet, or the Transient/Stalled error with the partial one) and
the previous status (only to keep `lastTransitionTime` and what a failed pass must not
overwrite) and returns the whole status, which the cluster adapter writes with server-side apply
on the status subresource. Must not do I/O or import the kubernetes client.

The inventory is stored as gzip-compressed JSON in base64: 10,000 entries take about 0.6 MB,
well under etcd's 1.5 MB object limit (a test measures it), where plain YAML would not fit.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from reconciler import applyplan, changeset, config, errors, objectref

GROUP = "gitwarden.dev"
VERSION = "v1alpha1"
KIND = "Sync"
PLURAL = "syncs"
API_VERSION = f"{GROUP}/{VERSION}"
APPLYSET_ID_LABEL = "applyset.kubernetes.io/id"
APPLYSET_PART_OF_LABEL = "applyset.kubernetes.io/part-of"
APPLYSET_TOOLING = "applyset.kubernetes.io/tooling"
APPLYSET_GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
INVENTORY_FORMAT = "gzip+json/v1"
MAX_WARNINGS = 50
MAX_MESSAGE = 4096  # a condition message may hold 32 KiB; a person reads the first lines


@dataclass(frozen=True)
class Outcome:
    """What one pass did, as status reports it.

    `inventory` is what to store (None: keep the stored one, e.g. when the pass failed before
    it had a plan); `error` is None for a successful pass.
    """

    attempted: str | None
    signer: str
    changes: changeset.ChangeSet
    inventory: applyplan.Inventory | None
    error: errors.ReconcileError | None = None
    warnings: tuple[str, ...] = ()
    progressing: bool = False
    """A pass is applying `attempted` now (written before apply, with the write-ahead inventory)."""


def succeeded(
    plan: applyplan.ApplyPlan, changes: changeset.ChangeSet, warnings: tuple[str, ...] = ()
) -> Outcome:
    """A pass that applied (and pruned) all of `plan`; `warnings` (the pass's own) come first."""
    kept = tuple(f"{ref.display()} left Git but is kept: {why}" for ref, why in plan.kept)
    return Outcome(
        attempted=plan.revision.commit,
        signer=signer_of(plan),
        changes=changes,
        inventory=inventory_after(plan, changes, complete=True),
        warnings=warnings + kept,
    )


def failed(
    error: errors.ReconcileError,
    plan: applyplan.ApplyPlan | None = None,
    changes: changeset.ChangeSet | None = None,
    attempted: str | None = None,
) -> Outcome:
    """A pass that stopped at `error`; with a plan, what it applied before is kept on record.

    `attempted` names the revision when the pass stopped before it had a plan (a refused tip).
    """
    done = changes if changes is not None else getattr(error, "changes", changeset.ChangeSet())
    return Outcome(
        attempted=plan.revision.commit if plan else attempted,
        signer=signer_of(plan) if plan else "",
        changes=done,
        inventory=inventory_after(plan, done, complete=False) if plan else None,
        error=error,
    )


def progressing(plan: applyplan.ApplyPlan) -> Outcome:
    """A pass about to apply `plan`: Reconciling, and the write-ahead inventory.

    Written before the first object is applied, so a process killed at any point of the apply
    (SIGKILL, OOM, a node lost) has left on record every object it may have created: the next
    pass prunes those that left Git meanwhile, instead of orphaning them.
    """
    return Outcome(
        attempted=plan.revision.commit,
        signer=signer_of(plan),
        changes=changeset.ChangeSet(),
        inventory=inventory_after(plan, changeset.ChangeSet(), complete=False),
        progressing=True,
    )


def signer_of(plan: applyplan.ApplyPlan) -> str:
    """The principals that signed the revision, for the Signer column."""
    names = (s.principals[0] if s.principals else s.fingerprint for s in plan.revision.signers)
    return ", ".join(dict.fromkeys(names))


def inventory_after(
    plan: applyplan.ApplyPlan, changes: changeset.ChangeSet, *, complete: bool
) -> applyplan.Inventory:
    """The inventory to store after a pass: what it applied, plus what it must not forget.

    Entries of the previous inventory stay unless the pass deleted the object or found it no
    longer ours (a prune skip); applied objects get their new digest and resourceVersion. So
    kept objects (protected kinds, the never-to-empty guard) stay on record for a later prune,
    and a pass that failed half way still knows everything it (and the last pass) applied.

    A pass that did not complete (or has not started: the write-ahead) also keeps every
    planned object on record, applied or not: a request in flight when it stopped may have
    created the object without the answer arriving. Those entries have no digest and no
    resourceVersion, so apply's no-op skip never trusts them (the object is applied again)
    while prune knows them (a later revision without them deletes them, if they exist).
    """
    planned = {obj.ref: obj for obj in plan.objects()}
    entries = dict(plan.previous.entries)
    if not complete:
        for ref, unreached in planned.items():
            if ref not in entries:
                entries[ref] = applyplan.InventoryEntry(
                    "", "", unreached.source, unreached.prune_allowed
                )
    for change in changes.changes:
        if change.action is changeset.Action.DELETED or (
            change.action is changeset.Action.SKIPPED and change.stage == "prune"
        ):
            entries.pop(change.ref, None)
            continue
        obj = planned.get(change.ref)
        if obj is not None and change.resource_version:
            entries[change.ref] = applyplan.InventoryEntry(
                obj.digest, change.resource_version, obj.source, obj.prune_allowed
            )
    commit = plan.revision.commit if complete else plan.previous.commit
    return applyplan.Inventory(commit=commit, entries=MappingProxyType(entries))


def applyset_id(name: str) -> str:
    """The ApplySet id of the Sync parent `name` (KEP-3659: cluster-scoped, so no namespace)."""
    digest = hashlib.sha256(f"{name}..{KIND}.{GROUP}".encode()).digest()
    return "applyset-" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "-v1"


def part_of_selector(applyset: str) -> str:
    """The label selector for every object of the ApplySet `applyset`."""
    return f"{APPLYSET_PART_OF_LABEL}={applyset}"


def parent_metadata(
    name: str,
    inventory: applyplan.Inventory | None,
    tooling_version: str,
    managed_label: tuple[str, str] = (config.MANAGED_LABEL_KEY, config.MANAGED_LABEL_VALUE),
) -> dict[str, Any]:
    """Labels and annotations that make the Sync object the ApplySet parent.

    It also carries the managed label, so the webhook guards it like any managed object: only
    the GitOps identity may change it or (a rule of its own) its status.
    """
    annotations = {APPLYSET_TOOLING: f"gitwarden/{tooling_version}"}
    if inventory is not None:
        kinds = sorted({ref.group_kind for ref in inventory.entries})
        annotations[APPLYSET_GROUP_KINDS] = ",".join(kinds)
    labels = {APPLYSET_ID_LABEL: applyset_id(name), managed_label[0]: managed_label[1]}
    return {"name": name, "labels": labels, "annotations": annotations}


def render(
    outcome: Outcome,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime,
    generation: int = 1,
) -> dict[str, Any]:
    """The whole `status` of the Sync object for `outcome`."""
    before = previous or {}
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ok = outcome.error is None and not outcome.progressing
    summary = outcome.changes.summary()
    if outcome.progressing:
        text = f"applying {_short(outcome.attempted)}"
        ready = ("Unknown", "Progressing", text)
        reconciling = ("True", "Progressing", text)
        stalled = ("False", "Progressing", "")
    elif ok:
        ready = ("True", "Applied", f"applied {_short(outcome.attempted)}: {summary}")
        reconciling = ("False", "Applied", "")
        stalled = ("False", "Applied", "")
    else:
        reason = reason_of(outcome.error)
        text = _clip(
            f"{outcome.error}" + (f" (before it: {summary})" if outcome.changes.changes else "")
        )
        transient = isinstance(outcome.error, errors.Transient)
        ready = ("False", reason, text)
        reconciling = ("True", reason, "retrying") if transient else ("False", reason, "")
        stalled = ("False", reason, "") if transient else ("True", reason, text)
    old = {c.get("type"): c for c in before.get("conditions") or () if isinstance(c, Mapping)}
    conditions = [
        _condition(kind, value, old.get(kind), stamp, generation)
        for kind, value in (("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled))
    ]
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions}
    commit = outcome.attempted if ok else before.get("lastAppliedCommit")
    for key, value in (
        ("lastAppliedCommit", commit),
        ("revision", _short(commit) if commit else None),
        ("signer", outcome.signer if ok else before.get("signer")),
        ("lastAppliedTime", stamp if ok else before.get("lastAppliedTime")),
        ("lastAttemptedCommit", outcome.attempted or before.get("lastAttemptedCommit")),
    ):
        if value:
            status[key] = value
    status["changeSet"] = {"summary": summary} | {
        action.value: n for action, n in outcome.changes.counts().items()
    }
    if outcome.progressing and isinstance(before.get("changeSet"), Mapping):
        status["changeSet"] = dict(before["changeSet"])  # the last pass's, until this one ends
    warnings = list(outcome.warnings[:MAX_WARNINGS])
    if len(outcome.warnings) > MAX_WARNINGS:
        warnings.append(f"and {len(outcome.warnings) - MAX_WARNINGS} more")
    if warnings:
        status["warnings"] = warnings
    if outcome.inventory is not None:
        status["inventory"] = encode_inventory(outcome.inventory)
    elif isinstance(before.get("inventory"), Mapping):
        status["inventory"] = dict(before["inventory"])
    return status


def encode_inventory(inventory: applyplan.Inventory) -> dict[str, Any]:
    """The compact stored form: gzip-compressed JSON rows `[ref, digest, rv, source]`.

    A row gets a fifth element, `1`, when the object as last applied allowed pruning of its
    protected kind (`gitwarden.dev/prune: allow`); rows without it read as not allowed.
    """
    rows = sorted(
        [str(ref), e.digest, e.resource_version, e.source, *([1] if e.prune_allowed else [])]
        for ref, e in inventory.entries.items()
    )
    raw = json.dumps({"objects": rows}, separators=(",", ":")).encode()
    packed = gzip.compress(raw, compresslevel=6, mtime=0)
    return {
        "format": INVENTORY_FORMAT,
        "count": len(rows),
        "data": base64.b64encode(packed).decode("ascii"),
    }


def decode_inventory(status: Mapping[str, Any] | None) -> applyplan.Inventory:
    """The inventory in a Sync status; raises ValueError when it is there but unreadable."""
    status = status or {}
    commit = status.get("lastAppliedCommit")
    stored = status.get("inventory")
    if stored is None:
        return applyplan.Inventory(commit=str(commit) if commit else None)
    if not isinstance(stored, Mapping) or stored.get("format") != INVENTORY_FORMAT:
        raise ValueError(f"the stored inventory is not in format {INVENTORY_FORMAT}")
    try:
        rows = json.loads(gzip.decompress(base64.b64decode(str(stored.get("data")), validate=True)))
        entries = {
            objectref.ObjectRef.parse(str(ref)): applyplan.InventoryEntry(
                str(digest), str(rv), str(source), prune_allowed=bool(allowed and allowed[0] == 1)
            )
            for ref, digest, rv, source, *allowed in rows["objects"]
        }
    except (ValueError, TypeError, KeyError, OSError, EOFError) as exc:
        raise ValueError(f"the stored inventory does not decode ({type(exc).__name__})") from exc
    return applyplan.Inventory(
        commit=str(commit) if commit else None, entries=MappingProxyType(entries)
    )


def _condition(
    kind: str,
    value: tuple[str, str, str],
    old: Mapping[str, Any] | None,
    stamp: str,
    generation: int,
) -> dict[str, Any]:
    state, reason, message = value
    # kstatus: the transition time moves only when the condition's status changes.
    since = old.get("lastTransitionTime") if old and old.get("status") == state else None
    return {
        "type": kind,
        "status": state,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or stamp,
        "observedGeneration": generation,
    }


def reason_of(error: BaseException | None) -> str:
    """The CamelCase reason conditions, Events and metrics show for `error`."""
    reason = getattr(error, "reason", None)
    text = reason if isinstance(reason, str) and reason.isidentifier() else type(error).__name__
    return text[:1].upper() + text[1:]


def _short(commit: str | None) -> str:
    return (commit or "")[:12]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
