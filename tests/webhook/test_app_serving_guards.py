"""The app's guards for the serving half of issue 9: client certificates, lookups, fail-open."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.webhook import reviews
from tests.webhook.fakes import FakeEngine, FakeParents
from tests.webhook.test_app import client_for, post
from webhook import parents, policy

GOLDEN = reviews.golden()["cases"]
SCALE = GOLDEN["scale_by_human_denied"]["input"]
CONFIGMAP = GOLDEN["user_update_configmap_denied"]["input"]


def test_with_a_client_ca_a_connection_without_a_certificate_gets_403_and_no_decision() -> None:
    """No verified peer certificate: 403 before the body is parsed; the engine is never asked."""
    engine = FakeEngine()
    client, metrics = client_for(engine, client_ca=Path("/etc/gitwarden/client-ca.crt"))
    resp = post(client, reviews.body(reviews.review_from_input(CONFIGMAP)))
    assert resp.status_code == 403
    assert "client certificate" in resp.get_json()["error"]
    assert engine.inputs == []
    assert b"gitwarden_webhook_unauthenticated_requests_total 1.0" in metrics.exposition()
    assert client.get("/readyz").status_code == 200  # probes need no certificate


def test_a_malformed_scale_target_is_never_looked_up() -> None:
    """`x?watch=true` is a 400; the parent lookup port is never called."""
    parents = FakeParents(labels={"gitwarden.dev/managed": "true"})
    client, _ = client_for(FakeEngine(), parents)
    body = reviews.review_from_input(SCALE)
    body["request"]["name"] = "x?watch=true"
    resp = post(client, reviews.body(body), "/validate/scale")
    assert resp.status_code == 400
    assert "DNS-1123 subdomain" in resp.get_json()["reason"]
    assert parents.asked == []


def test_fail_open_allows_are_counted_apart_from_engine_errors() -> None:
    """Each fail-open allow adds one to its own counter; failing closed adds nothing."""
    error = policy.EngineError("timeout", "policy engine unavailable: timed out")
    body = reviews.body(reviews.review_from_input(CONFIGMAP))
    for fail_open, expected in ((True, b"1.0"), (False, b"0.0")):
        client, metrics = client_for(FakeEngine(error=error), fail_open=fail_open)
        answer = post(client, body).get_json()["response"]
        assert answer["allowed"] is fail_open
        assert b"gitwarden_webhook_fail_open_allows_total " + expected in metrics.exposition()


@pytest.mark.parametrize(
    ("namespace", "name"),
    [("team-a", "x?watch=true"), ("team-a", "a/b"), ("team-a/../kube-system", "web"), ("", "..")],
)
def test_the_lookup_adapter_refuses_segments_that_would_change_its_url(
    tmp_path: Path, namespace: str, name: str
) -> None:
    """Defence in depth: the adapter itself never builds such a URL (nothing listens here)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    lookup = parents.KubeParentLookup.load(kubeconfig, timeout=0.5)
    with pytest.raises(parents.LookupFailed, match="refusing to look up"):
        lookup.metadata("apps", "v1", "deployments", namespace, name)
