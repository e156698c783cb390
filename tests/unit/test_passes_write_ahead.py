"""When a pass writes the write-ahead status first: only when it may change something."""

from __future__ import annotations

from types import MappingProxyType

from reconciler import applyplan, objectref, passes
from tests.engine_plans import configmap, plan_of, planned

COMMIT = "1" * 40


def ref(name: str) -> objectref.ObjectRef:
    return objectref.ObjectRef("", "ConfigMap", "ns", name)


def test_only_a_pass_that_may_change_something_writes_ahead() -> None:
    obj = planned(configmap("ns", "a", {"k": "v"}))
    applied = applyplan.InventoryEntry(obj.digest, "7", obj.source)
    same = applyplan.Inventory(COMMIT, MappingProxyType({ref("a"): applied}))
    assert not passes.may_change(plan_of([obj], previous=same, commit=COMMIT))
    # A new revision, a new object, a changed one, one not yet applied, something to prune.
    assert passes.may_change(plan_of([obj], previous=same, commit="2" * 40))
    assert passes.may_change(
        plan_of([obj, planned(configmap("ns", "b", {}))], previous=same, commit=COMMIT)
    )
    changed = planned(configmap("ns", "a", {"k": "v2"}))
    assert passes.may_change(plan_of([changed], previous=same, commit=COMMIT))
    ahead = applyplan.InventoryEntry("", "", obj.source)
    unapplied = applyplan.Inventory(COMMIT, MappingProxyType({ref("a"): ahead}))
    assert passes.may_change(plan_of([obj], previous=unapplied, commit=COMMIT))
    assert passes.may_change(plan_of([obj], previous=same, commit=COMMIT, prune=[ref("gone")]))
