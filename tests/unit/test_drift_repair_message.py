"""What a drift repair says: the object and the field managers, never a value."""

from __future__ import annotations

from reconciler import changeset, config, drift, objectref

REF = objectref.ObjectRef("apps", "Deployment", "app", "web")


def test_a_change_names_the_object_and_every_manager() -> None:
    said = drift.Repair(REF, ("kubectl-edit", "gitwarden (Update)"), changeset.Action.CONFIGURED)
    assert said.message() == (
        "drift repaired: Deployment.apps app/web was changed outside Git by field manager"
        " kubectl-edit, gitwarden (Update); re-applied from Git (configured)"
    )


def test_a_deletion_and_a_lost_label_say_so() -> None:
    gone = drift.Repair(REF, (), changeset.Action.CREATED, drift.DELETED)
    assert gone.message() == (
        "drift repaired: Deployment.apps app/web was deleted; re-applied from Git (created)"
    )
    unlabelled = drift.Repair(REF, (), changeset.Action.CONFIGURED, drift.UNLABELLED)
    assert "lost its managed label (no other field manager owns" in unlabelled.message()


def test_the_selector_is_the_managed_label() -> None:
    settings = config.ApplyConfig(managed_label_key="example.com/owned", managed_label_value="yes")
    assert drift.selector(settings) == "example.com/owned=yes"
