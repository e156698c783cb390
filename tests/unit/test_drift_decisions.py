"""The repairer's decision for each kind of watch event, with a fake of our cluster adapter.

The fake answers the adapter's calls the repairer makes (apply, metadata read, discovery) and
counts them; each event is built as the watches build it (`watches.Event` with the owned-fields
digest). The end-to-end module covers the same rules on the real API server; this one covers
the orderings a real server produces only by timing (an event older than our own write, an
unknown digest, a relist's stale DELETED).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler import (
    changeset,
    cluster,
    config,
    discovery,
    drift,
    managedfields,
    manifests,
    objectref,
    watches,
)
from reconciler import pipeline as pipeline_stage
from tests import engine_plans

CONFIGMAPS = discovery.Resource("", "ConfigMap", "configmaps", True, ("v1",))
REF = objectref.ObjectRef("", "ConfigMap", "app", "settings")
CLEAN, DRIFTED = b"clean-digest-16b", b"other-digest-16b"


@dataclass
class FakeCluster:
    """Applies answer with the next scripted resourceVersion; metadata reads are scripted."""

    versions: list[str] = field(default_factory=list)
    live: dict[str, Any] | None = None
    calls: list[str] = field(default_factory=list)
    field_manager: str = "gitwarden"

    def resource(self, group: str, kind: str) -> discovery.Resource:
        return CONFIGMAPS

    def apply(self, ref: objectref.ObjectRef, body: Any, **_: Any) -> cluster.Applied:
        self.calls.append(f"apply {ref.name}")
        version = self.versions.pop(0)
        return cluster.Applied(ref, version, "uid-1", created=version.startswith("new"))

    def read_metadata(self, ref: objectref.ObjectRef) -> dict[str, Any] | None:
        self.calls.append(f"read {ref.name}")
        return self.live


def repairer_at(fake: FakeCluster, version: str) -> drift.Repairer:
    obj = engine_plans.planned(engine_plans.configmap("app", "settings", {"mode": "blue"}))
    plan = engine_plans.plan_of([obj])
    changes = changeset.ChangeSet(
        (changeset.Change(REF, changeset.Action.CREATED, "namespaced", resource_version=version),)
    )
    applied = pipeline_stage.Applied(plan.revision, plan, changes, manifests.KeyHints())
    repairer = drift.Repairer(fake, config.ApplyConfig(), "sync")
    repairer.track(applied)
    return repairer


def event(kind: watches.EventType, version: str, owned: bytes, **extra: Any) -> watches.Event:
    return watches.Event(kind, REF, version, owned=owned, **extra)


def test_our_write_teaches_the_digest_then_a_status_write_costs_nothing() -> None:
    fake = FakeCluster()
    repairer = repairer_at(fake, "10")
    assert repairer.handle(event("ADDED", "10", CLEAN, listed=True)) is None
    assert repairer.handle(event("MODIFIED", "11", CLEAN)) is None  # e.g. a status write
    assert fake.calls == []


def test_a_changed_digest_is_repaired_once_and_our_own_event_is_quiet() -> None:
    fake = FakeCluster(versions=["12"])
    repairer = repairer_at(fake, "10")
    repairer.handle(event("ADDED", "10", CLEAN, listed=True))
    editor = (managedfields.Entry("kubectl-edit", "Update", "", "", {"f:data": {}}),)
    repair = repairer.handle(event("MODIFIED", "11", DRIFTED, managers=editor))
    assert repair is not None
    assert (repair.managers, repair.action) == (("kubectl-edit",), changeset.Action.CONFIGURED)
    assert repairer.handle(event("MODIFIED", "12", CLEAN)) is None
    assert repairer.handle(event("MODIFIED", "13", CLEAN)) is None
    assert fake.calls == ["apply settings"]


def test_an_event_older_than_our_write_applies_once_and_reports_nothing() -> None:
    # A pass wrote version 20; an edit from before it (15) is still queued behind it.
    fake = FakeCluster(versions=["20"])
    repairer = repairer_at(fake, "20")
    assert repairer.handle(event("MODIFIED", "15", DRIFTED)) is None
    assert repairer.handle(event("MODIFIED", "20", CLEAN)) is None  # learns the digest now
    assert repairer.handle(event("MODIFIED", "21", CLEAN)) is None
    assert fake.calls == ["apply settings"]


def test_an_unknown_digest_with_fields_as_git_has_them_is_learnt_not_reported() -> None:
    fake = FakeCluster(versions=["30"])  # the apply changes nothing: same version back
    repairer = repairer_at(fake, "10")
    assert repairer.handle(event("ADDED", "30", CLEAN, listed=True)) is None
    assert repairer.handle(event("MODIFIED", "31", CLEAN)) is None
    assert fake.calls == ["apply settings"]


def test_a_deleted_object_is_created_again_and_a_stale_deleted_reports_nothing() -> None:
    fake = FakeCluster(versions=["new-40"])
    repairer = repairer_at(fake, "10")
    repair = repairer.handle(event("DELETED", "35", b""))
    assert repair is not None
    assert (repair.cause, repair.action) == (drift.DELETED, changeset.Action.CREATED)

    labelled = {"metadata": {"resourceVersion": "41", "labels": {"gitwarden.dev/managed": "true"}}}
    fake.live, fake.versions = labelled, ["41"]
    assert repairer.handle(event("DELETED", "41", b"", listed=True)) is None
    assert fake.calls == ["read settings", "apply settings", "read settings", "apply settings"]


def test_an_unlabelled_object_gets_its_label_back_naming_who_owns_our_fields() -> None:
    live = {
        "metadata": {
            "resourceVersion": "50",
            "labels": {"gitwarden.dev/managed": "false"},
            "managedFields": [
                {"manager": "gitwarden", "operation": "Apply", "time": "T1", "fieldsV1": {}},
                {
                    "manager": "kubectl-label",
                    "operation": "Update",
                    "time": "T1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:gitwarden.dev/managed": {}}}},
                },
            ],
        }
    }
    fake = FakeCluster(versions=["51"], live=live)
    repair = repairer_at(fake, "10").handle(event("DELETED", "50", b""))
    assert repair is not None
    assert (repair.cause, repair.managers) == (drift.UNLABELLED, ("kubectl-label",))


def test_untracked_objects_bookmarks_and_forgotten_objects_are_left_alone() -> None:
    fake = FakeCluster()
    repairer = repairer_at(fake, "10")
    other = objectref.ObjectRef("", "ConfigMap", "app", "not-in-git")
    assert repairer.handle(watches.Event("MODIFIED", other, "99", owned=DRIFTED)) is None
    assert repairer.handle(event("BOOKMARK", "99", b"")) is None
    # After a failed pass that touched it, the old plan must not undo the newer revision.
    repairer.forget(changeset.ChangeSet((changeset.Change(REF, changeset.Action.DELETED, "p"),)))
    assert repairer.handle(event("DELETED", "60", b"")) is None
    assert len(repairer) == 0
    assert fake.calls == []
    assert repairer.kinds() == ()
