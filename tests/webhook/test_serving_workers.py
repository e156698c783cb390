"""Several gunicorn workers: exact metrics, every log line kept, new policy data used at once.

Real gunicorn over TLS with 2 workers, a real OPA server; requests go out on new connections
from several threads at once, so both workers answer (checked from the pid in each log line).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import LOOPBACK
from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews

CONFIG = reviews.golden()["config"]
CASE = reviews.golden()["cases"]["user_update_configmap_denied"]["input"]
USER = CASE["userInfo"]["username"]


def _serve(tmp_path: Path, *, writable: bool) -> Iterator[tuple[OpaServer, WebhookServer]]:
    opa = OpaServer(tmp_path, {"gitwarden": {"admission": CONFIG}}, writable=writable)
    server = WebhookServer.self_signed(
        tmp_path,
        env={
            "GITWARDEN_WEBHOOK_WORKERS": "2",
            "GITWARDEN_WEBHOOK_THREADS": "2",
            "GITWARDEN_WEBHOOK_DECISION_CACHE": "4096",
        },
    )
    opa.start()
    try:
        server.env["GITWARDEN_WEBHOOK_OPA_URL"] = opa.url
        server.start()
        yield opa, server
    finally:
        server.stop()
        opa.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[OpaServer, WebhookServer]]:
    """A writable OPA with the golden configuration and the webhook with 2 workers x 2 threads,
    its decision cache on (and declining: this OPA takes writes)."""
    yield from _serve(tmp_path, writable=True)


@pytest.fixture
def served_locked(tmp_path: Path) -> Iterator[tuple[OpaServer, WebhookServer]]:
    """As `served`, with OPA refusing writes as the chart's sidecar does: decisions are kept."""
    yield from _serve(tmp_path, writable=False)


def _post_concurrently(server: WebhookServer, bodies: list[bytes], threads: int = 4) -> list[Any]:
    """Each body on a new connection (whichever worker accepts it), `threads` at a time."""
    answers: list[Any] = []
    lock = threading.Lock()

    def send(mine: list[bytes]) -> None:
        for body in mine:
            status, answer = server.post(body)
            assert status == 200
            with lock:
                answers.append(answer["response"])

    workers = [threading.Thread(target=send, args=(bodies[i::threads],)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert len(answers) == len(bodies)
    return answers


def _metrics(server: WebhookServer) -> str:
    with urllib.request.urlopen(  # noqa: S310 - loopback URL built by the harness
        f"{server.url}/metrics", context=server.tls_context(), timeout=10
    ) as resp:
        text: bytes = resp.read()
    return text.decode()


def _sample(text: str, line_start: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    )


def test_metrics_add_up_exactly_across_two_workers(served: tuple[OpaServer, WebhookServer]) -> None:
    """N decisions and M bad requests served by both workers: every /metrics read says N and M."""
    _, server = served
    uids = [f"metrics-{i}" for i in range(120)]
    bodies = [reviews.body(reviews.review_from_input(CASE, uid=u)) for u in uids]
    answers = _post_concurrently(server, bodies)
    assert sorted(a["uid"] for a in answers) == sorted(uids)
    assert not any(a["allowed"] for a in answers)
    for _ in range(3):
        status, _ = server.post(b"{not json")
        assert status == 400
    pids = set(re.findall(r"\[(\d+)\] metrics-\d+ update", _wait_for_lines(server, 120)))
    assert len(pids) == 2, f"one worker answered everything: {pids}"
    # Each read is answered by either worker; each sums both workers' files.
    for _ in range(6):
        text = _metrics(server)
        deny = 'gitwarden_webhook_decisions_total{mode="enforce",reason="not-gitops",result="deny"}'
        assert _sample(text, deny) == 120
        assert _sample(text, "gitwarden_webhook_request_duration_seconds_count") == 120
        assert _sample(text, "gitwarden_webhook_bad_requests_total") == 3


def _wait_for_lines(server: WebhookServer, count: int, timeout: float = 10.0) -> str:
    """The log once it holds `count` decision lines of this test (the writer batches them)."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if len(re.findall(r"metrics-\d+ update", log)) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_every_log_line_is_written_by_the_time_the_server_has_stopped(
    served: tuple[OpaServer, WebhookServer],
) -> None:
    """Lines still queued in a worker's writer when it is stopped are written, none twice."""
    _, server = served
    uids = [f"stopping-{i}" for i in range(200)]
    _post_concurrently(server, [reviews.body(reviews.review_from_input(CASE, uid=u)) for u in uids])
    server.stop()  # SIGTERM: each worker exits through gunicorn's worker_exit hook
    lines = re.findall(r"(stopping-\d+) update ConfigMap team-a/web by \S+: denied", server.log())
    assert sorted(lines) == sorted(uids)


def _push_exemption(opa: OpaServer, usernames: list[str]) -> None:
    """Replace the policy's data in the running OPA: `usernames` exempt."""
    data = json.loads(json.dumps(CONFIG))
    data["exemptions"]["usernames"] = usernames
    conn = http.client.HTTPConnection(LOOPBACK, opa.port, timeout=10)
    try:
        conn.request(
            "PUT",
            "/v1/data/gitwarden/admission",
            json.dumps(data),
            {"Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 204
    finally:
        conn.close()


def test_policy_data_pushed_to_opa_decides_the_very_next_request(
    served: tuple[OpaServer, WebhookServer],
) -> None:
    """No decision outlives the data it came from: identical reviews change verdict at once."""
    opa, server = served

    def verdicts(tag: str) -> set[tuple[bool, str]]:
        bodies = [
            reviews.body(reviews.review_from_input(CASE, uid=f"{tag}-{i}")) for i in range(24)
        ]
        return {
            (a["allowed"], a.get("status", {}).get("message", "")[:20])
            for a in _post_concurrently(server, bodies)
        }

    before = verdicts("before")
    assert {allowed for allowed, _ in before} == {False}
    _push_exemption(opa, [USER])
    assert verdicts("exempt") == {(True, "")}
    _push_exemption(opa, [])
    assert verdicts("again") == before


def _verdicts(server: WebhookServer, tag: str) -> set[tuple[bool, str]]:
    bodies = [reviews.body(reviews.review_from_input(CASE, uid=f"{tag}-{i}")) for i in range(24)]
    return {
        (a["allowed"], a.get("status", {}).get("message", "")[:20])
        for a in _post_concurrently(server, bodies)
    }


def test_a_writable_opa_gets_every_decision_asked_even_with_the_cache_on(
    served: tuple[OpaServer, WebhookServer],
) -> None:
    _, server = served
    _verdicts(server, "twice-a")
    _verdicts(server, "twice-b")
    text = _metrics(server)
    assert _sample(text, 'gitwarden_webhook_decision_cache_total{result="uncacheable"}') == 48
    assert _sample(text, 'gitwarden_webhook_decision_cache_total{result="hit"}') == 0
    assert "decision cache off for OPA" in server.log()


def test_an_opa_restarted_with_new_data_decides_the_next_request_of_every_worker(
    served_locked: tuple[OpaServer, WebhookServer],
) -> None:
    """Kept decisions answer repeats, and none outlives the OPA process that made it."""
    opa, server = served_locked
    before = _verdicts(server, "before")
    assert {allowed for allowed, _ in before} == {False}
    assert _verdicts(server, "repeat") == before
    text = _metrics(server)
    hits = _sample(text, 'gitwarden_webhook_decision_cache_total{result="hit"}')
    misses = _sample(text, 'gitwarden_webhook_decision_cache_total{result="miss"}')
    assert hits + misses == 48
    # Each of the 2 x 2 request threads asks OPA at least once; the rest may be answered again.
    assert hits >= 24, text
    assert ", from the decision cache" in server.log()
    opa.stop()
    exempt = json.loads(json.dumps(CONFIG))
    exempt["exemptions"]["usernames"] = [USER]
    opa.data = {"gitwarden": {"admission": exempt}}
    opa.start()
    assert _verdicts(server, "exempt") == {(True, "")}
    opa.stop()
    opa.data = {"gitwarden": {"admission": CONFIG}}
    opa.start()
    assert _verdicts(server, "again") == before
