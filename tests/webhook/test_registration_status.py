"""Guarded cluster-scoped kinds: their status subresource is sent when status is intercepted.

The Sync status object (`syncs.gitwarden.dev`) is the case that matters: its status holds the
last applied commit and the inventory, so a status write must reach the policy like any other.
The end-to-end proof: `test_nobody_but_gitops_writes_the_sync_status` in tests/e2e/.
"""

from __future__ import annotations

from webhook import config, registration

SYNC = config.ClusterKind("gitwarden.dev", "Sync", "syncs")


def _cluster_rules(intercept_status: bool) -> list[dict[str, object]]:
    admission = config.AdmissionConfig(
        cluster_scoped_kinds=(SYNC,), intercept_status=intercept_status
    )
    document = registration.validating_webhook_configuration(admission, {"url": "https://x"})
    hooks = {hook["name"]: hook for hook in document["webhooks"]}
    rules: list[dict[str, object]] = hooks["cluster-kinds.gitwarden.gitwarden.dev"]["rules"]
    return rules


def test_status_of_a_guarded_kind_is_sent_when_status_is_intercepted() -> None:
    [rule] = _cluster_rules(intercept_status=True)
    assert rule["apiGroups"] == ["gitwarden.dev"]
    assert rule["resources"] == ["syncs", "syncs/status"]


def test_without_status_interception_only_the_object_is_sent() -> None:
    [rule] = _cluster_rules(intercept_status=False)
    assert rule["resources"] == ["syncs"]
