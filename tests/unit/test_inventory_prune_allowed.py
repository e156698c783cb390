"""The prune-allow decision travels from the applied Git body into the stored inventory and
back into the next plan, which is where plan reads it (never from the live object)."""

from __future__ import annotations

from types import MappingProxyType

from reconciler import applyplan, changeset, manifests, objectref, plan, status
from tests import revisions

NS = objectref.ObjectRef("", "Namespace", "", "scratch")


def namespace_manifest(allow: bool) -> manifests.Manifest:
    annotations = {"gitwarden.dev/prune": "allow"} if allow else {}
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "scratch", "annotations": annotations}}  # fmt: skip
    return manifests.Manifest.of("infra/ns.yaml", body, 1)


def applied_inventory(allow: bool) -> applyplan.Inventory:
    decrypted = manifests.DecryptedManifests(
        revisions.verified("a" * 40), (namespace_manifest(allow),), (), manifests.KeyHints(), 0
    )
    built = plan.build(decrypted, applyplan.Inventory(), revisions.settings())
    changes = changeset.ChangeSet(
        (changeset.Change(NS, changeset.Action.CREATED, "namespaces", resource_version="7"),)
    )
    stored = status.encode_inventory(status.inventory_after(built, changes, complete=True))
    return status.decode_inventory({"lastAppliedCommit": "a" * 40, "inventory": stored})


def next_plan(previous: applyplan.Inventory) -> applyplan.ApplyPlan:
    other = manifests.Manifest.of(
        "infra/cm.yaml",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}},
        1,
    )
    decrypted = manifests.DecryptedManifests(
        revisions.verified("b" * 40), (other,), (), manifests.KeyHints(), 0
    )
    return plan.build(decrypted, previous, revisions.settings())


def test_a_namespace_last_applied_with_prune_allow_is_pruned_once_it_leaves_git() -> None:
    previous = applied_inventory(allow=True)
    assert previous.entries[NS].prune_allowed
    assert next_plan(previous).prune == (NS,)


def test_a_namespace_last_applied_without_it_is_kept() -> None:
    previous = applied_inventory(allow=False)
    assert not previous.entries[NS].prune_allowed
    built = next_plan(previous)
    assert built.prune == ()
    assert [ref for ref, _ in built.kept] == [NS]


def test_inventories_stored_before_the_flag_existed_still_decode() -> None:
    old = status.encode_inventory(
        applyplan.Inventory(
            "a" * 40, MappingProxyType({NS: applyplan.InventoryEntry("d", "1", "infra/ns.yaml")})
        )
    )
    decoded = status.decode_inventory({"inventory": old})
    assert decoded.entries[NS] == applyplan.InventoryEntry("d", "1", "infra/ns.yaml")
