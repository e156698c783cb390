"""Attacks on the webhook's input and failure handling (issue 9, item 11), over real TLS.

A 5,000-digit JSON integer made Python's int conversion limit raise inside the parser, and the
webhook answered HTTP 500 (the README promises a 400). With fail-open on, an OPA pushed past
its timeout turns every request into an allow: that must at least be counted and logged as
what it is. Both run against `gitwarden webhook serve` under gunicorn with a real OPA.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews

CASE = reviews.golden()["cases"]["user_update_configmap_denied"]["input"]


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    """A real OPA loaded with the admission policy."""
    server = OpaServer(
        tmp_path_factory.mktemp("opa"), {"gitwarden": {"admission": reviews.golden()["config"]}}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fail_open_webhook(
    opa: OpaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookServer]:
    """The webhook with fail-open on and a short OPA timeout."""
    server = WebhookServer.self_signed(
        tmp_path_factory.mktemp("fail-open"),
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
            "GITWARDEN_WEBHOOK_OPA_TIMEOUT": "0.5",
            "GITWARDEN_WEBHOOK_FAIL_OPEN": "true",
            "GITWARDEN_WEBHOOK_WORKERS": "1",
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _metric(server: WebhookServer, name: str) -> float:
    with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
        f"{server.url}/metrics", context=server.tls_context(), timeout=5
    ) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("where", ["object", "array", "top-level"])
def test_a_5000_digit_integer_gets_400_not_500(
    fail_open_webhook: WebhookServer, where: str
) -> None:
    """Python's int-string limit is a malformed body, answered 400 with a reason."""
    digits = "9" * 5000
    review = reviews.review_from_input(CASE)
    text = json.dumps(review)
    body = {
        "object": text.replace('"dryRun": false', f'"dryRun": {digits}'),
        "array": text.replace('"groups": [', f'"groups": [{digits}, ', 1),
        "top-level": digits,
    }[where].encode()
    status, answer = fail_open_webhook.post(body)
    assert status == 400
    assert answer["reason"] == "body is not usable JSON: a number has too many digits"
    assert "allowed" not in json.dumps(answer)


@contextlib.contextmanager
def _frozen(process: Any) -> Iterator[None]:
    """Stop the OPA process (as overload would) and always let it run again."""
    os.killpg(process.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.popen.pid, signal.SIGCONT)


def test_fail_open_allows_past_the_engine_timeout_are_counted_and_logged(
    fail_open_webhook: WebhookServer, opa: OpaServer
) -> None:
    """OPA alive but too slow: fail-open allows the change, counts it and logs it as unchecked."""
    body = reviews.body(reviews.review_from_input(CASE, uid="fail-open-1"))
    status, answer = fail_open_webhook.post(body)
    assert (status, answer["response"]["allowed"]) == (200, False)  # OPA decides when it can
    before = _metric(fail_open_webhook, "gitwarden_webhook_fail_open_allows_total")
    with _frozen(opa.process):
        for _ in range(3):
            status, answer = fail_open_webhook.post(body)
            assert status == 200
            assert answer["response"]["allowed"] is True
            assert "fail-open" in answer["response"]["warnings"][0]
    after = _metric(fail_open_webhook, "gitwarden_webhook_fail_open_allows_total")
    assert after - before == 3
    # Log lines are written in batches (webhook/logbuffer.py): these within moments.
    deadline = time.monotonic() + 5
    while (log := fail_open_webhook.log()).count("fail-open-1 ConfigMap team-a/web by ") < 3:
        assert time.monotonic() < deadline, "the fail-open allows never reached the log"
        time.sleep(0.05)
    assert "allowed WITHOUT a policy decision (fail-open)" in log
    status, answer = fail_open_webhook.post(body)
    assert answer["response"]["allowed"] is False  # and denies again once OPA keeps up


def test_fail_open_counter_stays_zero_when_failing_closed(tmp_path: Path, opa: OpaServer) -> None:
    """Failing closed never counts a fail-open allow (the counter means what it says)."""
    server = WebhookServer.self_signed(
        tmp_path,
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
            "GITWARDEN_WEBHOOK_OPA_TIMEOUT": "0.5",
            "GITWARDEN_WEBHOOK_WORKERS": "1",
        },
    )
    server.start()
    try:
        with _frozen(opa.process):
            status, answer = server.post(reviews.body(reviews.review_from_input(CASE)))
        assert (status, answer["response"]["allowed"]) == (200, False)
        assert "policy engine unavailable" in answer["response"]["status"]["message"]
        assert _metric(server, "gitwarden_webhook_fail_open_allows_total") == 0
    finally:
        server.stop()
