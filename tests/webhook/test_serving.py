"""`gitwarden webhook serve` under real gunicorn over TLS, without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import LOOPBACK, free_port
from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews
from webhook import settings as settings_mod

CASE = reviews.golden()["cases"]["user_update_configmap_denied"]["input"]


@pytest.fixture(params=["closed", "open"])
def dead_opa_webhook(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebhookServer]:
    """The webhook pointed at a port where no OPA listens, failing closed or open."""
    server = WebhookServer.self_signed(
        tmp_path,
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": f"http://{LOOPBACK}:{free_port()}",
            "GITWARDEN_WEBHOOK_FAIL_OPEN": "true" if request.param == "open" else "false",
            "GITWARDEN_WEBHOOK_WORKERS": "1",
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_unreachable_engine_fails_closed_or_open_as_configured(
    dead_opa_webhook: WebhookServer,
) -> None:
    """Fail-closed denies with "policy engine unavailable"; fail-open allows, warns and audits."""
    status, answer = dead_opa_webhook.post(reviews.body(reviews.review_from_input(CASE)))
    assert status == 200
    response = answer["response"]
    if dead_opa_webhook.env["GITWARDEN_WEBHOOK_FAIL_OPEN"] == "true":
        assert response["allowed"] is True
        assert "fail-open" in response["warnings"][0]
        assert "engine-unavailable" in response["auditAnnotations"]
    else:
        assert response["allowed"] is False
        assert "policy engine unavailable" in response["status"]["message"]
    # Log lines are written in batches (webhook/logbuffer.py): this one within moments.
    deadline = time.monotonic() + 5
    while "policy engine unavailable: cannot connect" not in dead_opa_webhook.log():
        assert time.monotonic() < deadline, "the engine error never reached the log"
        time.sleep(0.05)


def test_served_decisions_come_from_the_real_policy(tmp_path: Path) -> None:
    """With OPA up, gunicorn answers the golden case with the policy's own denial."""
    opa = OpaServer(tmp_path, {"gitwarden": {"admission": reviews.golden()["config"]}})
    server = WebhookServer.self_signed(tmp_path, env={})
    opa.start()
    try:
        server.env["GITWARDEN_WEBHOOK_OPA_URL"] = opa.url
        server.start()
        status, answer = server.post(reviews.body(reviews.review_from_input(CASE, uid="x-1")))
    finally:
        server.stop()
        opa.stop()
    assert status == 200
    assert answer["response"]["uid"] == "x-1"
    assert "ConfigMap team-a/web is managed by GitOps" in answer["response"]["status"]["message"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GITWARDEN_WEBHOOK_OPA_TIMEOUT": "5"}, "OPA_TIMEOUT must be in"),
        ({"GITWARDEN_WEBHOOK_WORKERS": "two"}, "WORKERS: 'two' is not a int"),
        ({"GITWARDEN_WEBHOOK_FAIL_OPEN": "maybe"}, "FAIL_OPEN: 'maybe' is not true or false"),
        (
            {"GITWARDEN_WEBHOOK_TLS_CERT": "/x"},
            "TLS_CERT and GITWARDEN_WEBHOOK_TLS_KEY go together",
        ),
        ({"GITWARDEN_WEBHOOK_DECISION_CACHE": "-1"}, "DECISION_CACHE must be in"),
        ({"GITWARDEN_WEBHOOK_DECISION_CACHE": "many"}, "DECISION_CACHE: 'many' is not a int"),
    ],
    ids=["timeout", "int", "bool", "tls-pair", "cache-negative", "cache-word"],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    """Every invalid setting is refused with the variable's name."""
    with pytest.raises(settings_mod.SettingsError, match=message):
        settings_mod.WebhookSettings.from_env(env)


def test_settings_from_env() -> None:
    """Variables override defaults with the right types."""
    s = settings_mod.WebhookSettings.from_env(
        {
            "GITWARDEN_WEBHOOK_WORKERS": "3",
            "GITWARDEN_WEBHOOK_OPA_TIMEOUT": "0.4",
            "GITWARDEN_WEBHOOK_FAIL_OPEN": "yes",
            "GITWARDEN_WEBHOOK_KUBECONFIG": "/etc/kc",
        }
    )
    assert (s.workers, s.opa_timeout, s.fail_open, s.kubeconfig) == (3, 0.4, True, Path("/etc/kc"))
    assert settings_mod.WebhookSettings.from_env({}) == settings_mod.WebhookSettings()


def test_bad_admission_configuration_is_refused_before_serving(tmp_path: Path) -> None:
    """`webhook serve` names the bad field and exits 2: no worker starts, no traceback."""
    bad = tmp_path / "admission.yaml"
    bad.write_text("intercept_status: true\n")
    result = subprocess.run(
        # The installed entry point, as users run it.
        [str(Path(sys.executable).with_name("gitwarden")), "webhook", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "GITWARDEN_WEBHOOK_ADMISSION_CONFIG": str(bad)},
    )
    assert result.returncode == 2, result.stderr
    assert "intercept_status: removed" in result.stderr
    assert "Traceback" not in result.stderr
