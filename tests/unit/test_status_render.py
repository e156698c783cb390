"""The Sync status rendered once from an outcome, and the inventory a pass leaves behind (pure)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from types import MappingProxyType
from typing import Any

import pytest

from reconciler import applyplan, changeset, cluster_errors, objectref, status
from tests.engine_plans import configmap, plan_of, planned

T0 = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
Action = changeset.Action


def ref(name: str) -> objectref.ObjectRef:
    return objectref.ObjectRef("", "ConfigMap", "ns", name)


def entry(rv: str) -> applyplan.InventoryEntry:
    return applyplan.InventoryEntry("d" + rv, rv, "old.yaml")


def conditions(rendered: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in rendered["conditions"]}


def test_success_is_ready_and_names_the_commit_and_summary() -> None:
    plan = plan_of([planned(configmap("ns", "a", {}))], commit="f" * 40)
    done = changeset.ChangeSet(
        (changeset.Change(ref("a"), Action.CREATED, "namespaced", resource_version="7"),)
    )
    rendered = status.render(status.succeeded(plan, done), None, T0)
    assert conditions(rendered) == {
        "Ready": ("True", "Applied"),
        "Reconciling": ("False", "Applied"),
        "Stalled": ("False", "Applied"),
    }
    assert rendered["lastAppliedCommit"] == "f" * 40
    assert rendered["revision"] == "f" * 12
    assert rendered["lastAppliedTime"] == "2026-12-01T22:00:00Z"
    assert rendered["changeSet"] == {"summary": "1 created", "created": 1}
    assert rendered["inventory"]["count"] == 1


def test_a_transient_error_is_reconciling_and_a_stalled_one_stalled() -> None:
    busy = status.render(status.failed(cluster_errors.Busy("apply: HTTP 503")), None, T0)
    assert conditions(busy) == {
        "Ready": ("False", "Busy"),
        "Reconciling": ("True", "Busy"),
        "Stalled": ("False", "Busy"),
    }
    bad = status.render(status.failed(cluster_errors.Forbidden("apply: HTTP 403")), None, T0)
    assert conditions(bad) == {
        "Ready": ("False", "Forbidden"),
        "Reconciling": ("False", "Forbidden"),
        "Stalled": ("True", "Forbidden"),
    }
    stalled = next(c for c in bad["conditions"] if c["type"] == "Stalled")
    assert stalled["message"] == "apply: HTTP 403"


def test_transition_times_move_only_when_a_condition_changes() -> None:
    plan = plan_of([], commit="1" * 40)
    first = status.render(status.succeeded(plan, changeset.ChangeSet()), None, T0)
    again = status.render(status.succeeded(plan, changeset.ChangeSet()), first, T1)
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"2026-12-01T22:00:00Z"}
    failed = status.render(status.failed(cluster_errors.Busy("x")), again, T1)
    times = {c["type"]: c["lastTransitionTime"] for c in failed["conditions"]}
    assert times == {
        "Ready": "2026-12-01T22:05:00Z",
        "Reconciling": "2026-12-01T22:05:00Z",
        "Stalled": "2026-12-01T22:00:00Z",
    }


def test_a_failure_without_a_plan_keeps_what_the_last_success_recorded() -> None:
    plan = plan_of([planned(configmap("ns", "a", {}))], commit="1" * 40)
    done = changeset.ChangeSet(
        (changeset.Change(ref("a"), Action.CREATED, "namespaced", resource_version="7"),)
    )
    good = status.render(status.succeeded(plan, done), None, T0)
    failed = status.render(status.failed(cluster_errors.Unreachable("no answer")), good, T1)
    for key in ("lastAppliedCommit", "revision", "lastAppliedTime", "inventory"):
        assert failed[key] == good[key], key


def test_inventory_after_keeps_kept_and_unreached_entries_and_drops_deleted_and_disowned() -> None:
    previous = applyplan.Inventory(
        "0" * 40,
        MappingProxyType(
            {
                ref(n): entry(str(i))
                for i, n in enumerate(("kept", "gone", "disowned", "stay", "unreached"))
            }
        ),
    )
    stay = planned(configmap("ns", "stay", {"k": "v"}))
    plan = plan_of(
        [stay],
        previous=previous,
        prune=[ref("gone"), ref("disowned"), ref("unreached")],
        kept=[(ref("kept"), "protected kind")],
        commit="1" * 40,
    )
    done = changeset.ChangeSet(
        (
            changeset.Change(ref("stay"), Action.CONFIGURED, "namespaced", resource_version="99"),
            changeset.Change(ref("gone"), Action.DELETED, "prune"),
            changeset.Change(ref("disowned"), Action.SKIPPED, "prune", "no longer labelled"),
        )
    )
    partial = status.inventory_after(plan, done, complete=False)
    assert partial.commit == "0" * 40
    assert set(partial.entries) == {ref("kept"), ref("stay"), ref("unreached")}
    assert partial.entries[ref("stay")] == applyplan.InventoryEntry(stay.digest, "99", stay.source)
    assert status.inventory_after(plan, done, complete=True).commit == "1" * 40


def test_the_write_ahead_records_every_planned_object_without_trusting_any() -> None:
    previous = applyplan.Inventory("0" * 40, MappingProxyType({ref("old"): entry("5")}))
    new, old = planned(configmap("ns", "new", {})), planned(configmap("ns", "old", {"k": "2"}))
    plan = plan_of([new, old], previous=previous, commit="1" * 40)
    ahead = status.progressing(plan).inventory
    assert ahead is not None
    assert ahead.commit == "0" * 40  # not applied yet
    # The new object is on record for a later prune, with nothing the no-op skip could match.
    assert ahead.entries[ref("new")] == applyplan.InventoryEntry("", "", new.source)
    assert ahead.entries[ref("old")] == entry("5")  # what the last pass applied stays as it was
    # A pass killed before it wrote anything, rendered and read back: the same entries.
    stored = status.render(status.progressing(plan), None, T0)
    assert dict(status.decode_inventory(stored).entries) == dict(ahead.entries)
    # A pass that failed after the first object keeps the unreached one on record too.
    done = changeset.ChangeSet(
        (changeset.Change(ref("new"), Action.CREATED, "namespaced", resource_version="8"),)
    )
    failed = status.failed(cluster_errors.Unreachable("no answer"), plan, done).inventory
    assert failed is not None
    assert failed.entries[ref("new")] == applyplan.InventoryEntry(new.digest, "8", new.source)
    assert failed.entries[ref("old")] == entry("5")


def test_a_pass_in_progress_is_reconciling_with_ready_unknown_and_keeps_the_last_commit() -> None:
    first = plan_of([planned(configmap("ns", "a", {}))], commit="1" * 40)
    done = changeset.ChangeSet(
        (changeset.Change(ref("a"), Action.CREATED, "namespaced", resource_version="7"),)
    )
    good = status.render(status.succeeded(first, done), None, T0)
    second = plan_of([planned(configmap("ns", "a", {"k": "v"}))], commit="2" * 40)
    rendered = status.render(status.progressing(second), good, T1)
    assert conditions(rendered) == {
        "Ready": ("Unknown", "Progressing"),
        "Reconciling": ("True", "Progressing"),
        "Stalled": ("False", "Progressing"),
    }
    assert rendered["lastAppliedCommit"] == "1" * 40
    assert rendered["lastAttemptedCommit"] == "2" * 40
    assert rendered["changeSet"] == good["changeSet"]
    assert "applying " + "2" * 12 in str(rendered["conditions"])


def test_the_inventory_round_trips_and_a_corrupt_one_is_an_error() -> None:
    inventory = applyplan.Inventory(
        "c" * 40,
        MappingProxyType(
            {ref("a"): entry("1"), objectref.ObjectRef("apps", "Deployment", "ns", "w"): entry("2")}
        ),
    )
    stored = {"lastAppliedCommit": "c" * 40, "inventory": status.encode_inventory(inventory)}
    assert status.decode_inventory(stored) == inventory
    broken = {
        "inventory": {
            "format": status.INVENTORY_FORMAT,
            "data": base64.b64encode(b"not gzip").decode(),
        }
    }
    with pytest.raises(ValueError, match="does not decode"):
        status.decode_inventory(broken)


def test_the_applyset_id_follows_the_kep_formula() -> None:
    expected = (
        base64.urlsafe_b64encode(hashlib.sha256(b"gitwarden..Sync.gitwarden.dev").digest())
        .decode()
        .rstrip("=")
    )
    assert status.applyset_id("gitwarden") == f"applyset-{expected}-v1"
    meta = status.parent_metadata(
        "gitwarden",
        applyplan.Inventory(
            None,
            MappingProxyType(
                {
                    ref("a"): entry("1"),
                    objectref.ObjectRef("apps", "Deployment", "ns", "w"): entry("2"),
                }
            ),
        ),
        "1.2.3",
    )
    assert meta["annotations"] == {
        status.APPLYSET_TOOLING: "gitwarden/1.2.3",
        status.APPLYSET_GROUP_KINDS: "ConfigMap,Deployment.apps",
    }
