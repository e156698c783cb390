"""The chart's ValidatingWebhookConfiguration is exactly what webhook.registration makes.

Helm cannot run the Python that derives the registration from the admission document, so the
chart computes it a second time in templates/_registration.tpl. These tests render every value
set, read the admission document back from the rendered ConfigMap with the webhook's own reader,
and compare the whole registration and the webhook's RBAC rules with the Python ones: a change
on either side that the other lacks fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import webhookguard
from reconciler.guard import selfguard
from tests.chart import render
from webhook import config as config_mod
from webhook import registration


def _admission(docs: list[dict[str, Any]]) -> config_mod.AdmissionConfig:
    document = render.file_of(docs, "admission.yaml")
    return config_mod.from_document(document, source="rendered admission.yaml")


@pytest.mark.parametrize("value_set", render.value_sets())
def test_registration_equals_the_python_rendering(value_set: str) -> None:
    docs = render.documents(value_set)
    rendered = render.one(docs, "ValidatingWebhookConfiguration")
    client = dict(rendered["webhooks"][0]["clientConfig"])
    client["service"] = {k: v for k, v in client["service"].items() if k != "path"}
    expected = registration.validating_webhook_configuration(
        _admission(docs), client, name=rendered["metadata"]["name"]
    )
    assert [w["name"] for w in rendered["webhooks"]] == [w["name"] for w in expected["webhooks"]]
    for got, want in zip(rendered["webhooks"], expected["webhooks"], strict=True):
        assert got == want, got["name"]


@pytest.mark.parametrize("value_set", render.value_sets())
def test_webhook_role_is_exactly_what_registration_says_it_needs(value_set: str) -> None:
    docs = render.documents(value_set)
    [role] = render.of(docs, "ClusterRole", "webhook")
    assert role["rules"] == registration.webhook_rbac_rules(_admission(docs))


@pytest.mark.parametrize("value_set", render.value_sets())
def test_the_reconcilers_self_guard_expects_exactly_the_rendered_registration(
    value_set: str,
) -> None:
    """The self-guard's document is rendered from the same webhooks and the same generated CA
    as the registration (a second render would make another CA): restoring it changes nothing
    Helm installed. With cert-manager the caBundle is the injector's and is left alone."""
    docs = render.documents(value_set)
    rendered = render.one(docs, "ValidatingWebhookConfiguration")
    guard = render.file_of(docs, "webhook-configuration.json")
    assert guard["metadata"]["name"] == rendered["metadata"]["name"]
    assert guard["webhooks"] == rendered["webhooks"]
    settings = render.file_of(docs, "reconciler.yaml")
    assert settings["guard"]["webhook_configuration_file"].endswith("/webhook-configuration.json")
    target = webhookguard.target_for(guard, render.NAMESPACE)
    injected = "cert-manager.io/inject-ca-from" in (rendered["metadata"].get("annotations") or {})
    assert target.compare_ca_bundle is not injected
    assert not selfguard.differences(target, rendered)
    # The reconciler may read, watch, apply and replace exactly this one object, and not create.
    [rule] = [
        r
        for r in render.one(
            docs, "ClusterRole", f"{rendered['metadata']['name']}-reconciler-cluster"
        )["rules"]
        if "validatingwebhookconfigurations" in r["resources"]
    ]
    assert rule["resourceNames"] == [rendered["metadata"]["name"]]
    assert rule["verbs"] == ["get", "watch", "patch", "update"]
