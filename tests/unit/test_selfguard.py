"""The self-guard's comparison and restore, over a fake of its own cluster port."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from reconciler.guard import selfguard

HOOK = "managed.gitwarden.gitwarden.dev"


def _expected() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "gitwarden", "labels": {"app.kubernetes.io/name": "gitwarden"}},
        "webhooks": [
            {
                "name": HOOK,
                "clientConfig": {"url": "https://127.0.0.1:8443/validate", "caBundle": "Q0E="},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": ["*"],
                        "apiVersions": ["*"],
                        "resources": ["*"],
                    }
                ],
                "matchConditions": [{"name": "not-gitops", "expression": "true"}],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def _stored(doc: Mapping[str, Any], managers: list[dict[str, Any]]) -> dict[str, Any]:
    """What the API server keeps: defaults filled, empty selectors, managedFields."""
    live = copy.deepcopy(dict(doc))
    for hook in live["webhooks"]:
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("timeoutSeconds", 10)
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        for rule in hook["rules"]:
            rule.setdefault("scope", "*")
    live["metadata"] = {**live["metadata"], "resourceVersion": "7", "managedFields": managers}
    return live


def _owner(manager: str, condition: str) -> dict[str, Any]:
    key = json.dumps({"name": HOOK}, separators=(",", ":"))
    cond = json.dumps({"name": condition}, separators=(",", ":"))
    return {
        "manager": manager,
        "operation": "Update",
        "time": "2026-12-01T22:00:00Z",
        "fieldsV1": {"f:webhooks": {f"k:{key}": {"f:matchConditions": {f"k:{cond}": {}}}}},
    }


class FakeCluster:
    """Our port: a stored document; `apply` either takes effect or (like SSA with a field
    another manager owns) leaves extra matchConditions in place."""

    def __init__(self, live: dict[str, Any] | None, *, apply_keeps_extras: bool = False) -> None:
        self.live = live
        self.apply_keeps_extras = apply_keeps_extras
        self.calls: list[str] = []
        self.objects: list[selfguard.ObjectMeta] = []
        self.replaced: dict[str, Any] = {}

    def read_webhook_configuration(self, name: str) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.live)

    def apply_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        self.calls.append("apply")
        new = _stored(document, [{"manager": "gitwarden", "operation": "Apply"}])
        if self.apply_keeps_extras and self.live is not None:
            kept = self.live["webhooks"][0].get("matchConditions", [])
            names = {c["name"] for c in new["webhooks"][0]["matchConditions"]}
            new["webhooks"][0]["matchConditions"] += [c for c in kept if c["name"] not in names]
            bundle = self.live["webhooks"][0]["clientConfig"].get("caBundle")
            if bundle:  # an injector's caBundle the document leaves out stays, too
                new["webhooks"][0]["clientConfig"].setdefault("caBundle", bundle)
        self.live = new

    def replace_webhook_configuration(self, document: Mapping[str, Any]) -> None:
        self.calls.append("replace")
        self.replaced = copy.deepcopy(dict(document))
        assert document["metadata"]["resourceVersion"]
        self.live = _stored(document, [])
        self.apply_keeps_extras = False  # the foreign fields are gone now

    def namespace_objects(self, namespace: str) -> Sequence[selfguard.ObjectMeta]:
        return self.objects


def _target(**kw: Any) -> selfguard.Target:
    return selfguard.Target(_expected(), "gitwarden", **kw)


def _tampered() -> dict[str, Any]:
    live = _stored(_expected(), [_owner("gitwarden", "not-gitops"), _owner("kubectl-patch", "x")])
    live["webhooks"][0]["matchConditions"].append({"name": "x", "expression": "false"})
    return live


def test_stored_form_with_api_defaults_equals_the_expected_document() -> None:
    """Defaults the API server fills and empty selectors are no difference."""
    report = selfguard.check(FakeCluster(_stored(_expected(), [])), _target())
    assert report.clean


def test_added_match_condition_is_reported_with_the_manager_that_owns_it() -> None:
    """`matchConditions: [{name: x, expression: "false"}]` names kubectl-patch, not gitwarden."""
    report = selfguard.check(FakeCluster(_tampered()), _target())
    (drift,) = report.drift
    assert drift.path == f"webhooks[{HOOK}].matchConditions[x]"
    assert (drift.expected, drift.live) == (None, {"name": "x", "expression": "false"})
    assert drift.managers == ("kubectl-patch (Update 2026-12-01T22:00:00Z)",)


def test_changed_client_config_is_reported_only_when_the_expected_one_is_known() -> None:
    """An attacker's URL is drift; without --url the clientConfig is not compared."""
    live = _stored(_expected(), [])
    live["webhooks"][0]["clientConfig"]["url"] = "https://127.0.0.1:9/evil"
    assert [d.path for d in selfguard.check(FakeCluster(live), _target()).drift] == [
        f"webhooks[{HOOK}].clientConfig"
    ]
    unknown = selfguard.check(FakeCluster(live), _target(compare_client_config=False))
    assert unknown.clean
    assert not unknown.client_config_checked


def test_removed_and_added_webhooks_and_a_missing_configuration_are_reported() -> None:
    """A webhook gone, a foreign webhook added, the whole object deleted."""
    live = _stored(_expected(), [])
    live["webhooks"][0]["name"] = "evil.example"
    paths = {d.path for d in selfguard.check(FakeCluster(live), _target()).drift}
    assert paths == {f"webhooks[{HOOK}]", "webhooks[evil.example]"}
    assert selfguard.check(FakeCluster(None), _target()).missing


def test_restore_replaces_when_apply_cannot_remove_a_foreign_field() -> None:
    """SSA leaves a field another manager owns; restore then replaces and applies again."""
    cluster = FakeCluster(_tampered(), apply_keeps_extras=True)
    report = selfguard.restore(cluster, _target())
    assert report.restored
    assert cluster.calls == ["apply", "replace", "apply"]
    assert selfguard.check(cluster, _target()).clean


def test_restore_recreates_a_deleted_configuration_and_leaves_a_clean_one_alone() -> None:
    """Missing → applied once; already as expected → no write at all."""
    missing = FakeCluster(None)
    assert selfguard.restore(missing, _target()).restored
    assert missing.calls == ["apply"]
    clean = FakeCluster(_stored(_expected(), []))
    assert not selfguard.restore(clean, _target()).restored
    assert clean.calls == []


def test_restore_refuses_without_the_expected_client_config() -> None:
    """Restoring with an unknown clientConfig could keep an attacker's URL: refused."""
    with pytest.raises(selfguard.GuardError, match="clientConfig"):
        selfguard.restore(FakeCluster(_tampered()), _target(compare_client_config=False))


def test_foreign_managers_in_the_namespace_are_reported_but_status_and_root_ca_are_not() -> None:
    """Only non-GitOps writes to GitWarden's objects, as top-level field paths."""

    def entry(manager: str, subresource: str = "") -> selfguard.ManagedEntry:
        return selfguard.managed_entry(
            {
                "manager": manager,
                "operation": "Update",
                "subresource": subresource,
                "fieldsV1": {"f:data": {"f:password": {}}, "f:metadata": {"f:labels": {}}},
            }
        )

    cluster = FakeCluster(_stored(_expected(), []))
    cluster.objects = [
        selfguard.ObjectMeta("Secret", "opa-data", (entry("gitwarden"), entry("kubectl-edit"))),
        selfguard.ObjectMeta(
            "Deployment", "webhook", (entry("kube-controller-manager", "status"),)
        ),
        selfguard.ObjectMeta("ConfigMap", "kube-root-ca.crt", (entry("kube-controller-manager"),)),
    ]
    (change,) = selfguard.check(cluster, _target()).foreign
    assert (change.kind, change.name, change.manager) == ("Secret", "opa-data", "kubectl-edit")
    assert change.fields == ("data", "metadata.labels")  # key names under data never shown


def test_check_webhook_reads_no_namespace_and_restore_webhook_undoes_the_same_drift() -> None:
    """The loop's half: the webhook configuration alone, the same comparison and restore."""
    cluster = FakeCluster(_tampered(), apply_keeps_extras=True)
    cluster.objects = [selfguard.ObjectMeta("Secret", "s", (selfguard.managed_entry({}),))]
    report = selfguard.check_webhook(cluster, _target())
    assert report.foreign == ()
    assert [d.path for d in report.drift] == [f"webhooks[{HOOK}].matchConditions[x]"]
    assert selfguard.restore_webhook(cluster, _target()).restored
    assert cluster.calls == ["apply", "replace", "apply"]
    assert selfguard.check_webhook(cluster, _target()).clean


def test_an_injected_ca_bundle_is_neither_compared_nor_replaced_when_told() -> None:
    """cert-manager's cainjector owns the caBundle: a different one is no drift, and a replace
    keeps it; the URL is still compared (a foreign caBundle cannot redirect, only break)."""
    expected = _expected()
    del expected["webhooks"][0]["clientConfig"]["caBundle"]
    target = selfguard.Target(expected, "gitwarden", compare_ca_bundle=False)
    live = _stored(_tampered(), [_owner("kubectl-patch", "x")])
    live["webhooks"][0]["clientConfig"]["caBundle"] = "SU5KRUNURUQ="
    cluster = FakeCluster(live, apply_keeps_extras=True)
    assert [d.path for d in selfguard.check_webhook(cluster, target).drift] == [
        f"webhooks[{HOOK}].matchConditions[x]"
    ]
    assert selfguard.restore_webhook(cluster, target).restored
    assert cluster.calls == ["apply", "replace", "apply"]
    # The replace kept the injector's caBundle (a real SSA then leaves it to its owner).
    assert cluster.replaced["webhooks"][0]["clientConfig"]["caBundle"] == "SU5KRUNURUQ="
    redirected = _stored(expected, [])
    redirected["webhooks"][0]["clientConfig"]["url"] = "https://127.0.0.1:9/evil"
    assert selfguard.check_webhook(FakeCluster(redirected), target).drift
