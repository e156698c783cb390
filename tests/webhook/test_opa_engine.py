"""The OPA engine against a real `opa run --server`: golden decisions, timeouts, recovery."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.harness.controlplane import LOOPBACK
from tests.harness.services import OpaServer
from tests.webhook import reviews
from webhook import policy, review

GOLDEN = reviews.golden()


def engine_for(server: OpaServer, timeout: float = 1.0) -> policy.OpaEngine:
    return policy.OpaEngine(server.url, "admission/decision", timeout)


@pytest.mark.parametrize("name", sorted(GOLDEN["cases"]))
def test_real_opa_decides_every_golden_case_as_expected(opa_server: OpaServer, name: str) -> None:
    """The real policy in the real engine gives each golden case its expected verdict."""
    case = GOLDEN["cases"][name]
    decision = engine_for(opa_server).decide(case["input"])
    expect = case["expect"]
    assert decision.allowed is expect["allowed"]
    assert decision.reason == expect["reason"]
    assert bool(decision.warnings) is expect.get("warned", False)
    assert bool(decision.audit) is expect.get("audited", False)
    if not decision.allowed and decision.reason == "not-gitops":
        assert "Make the change in Git" in decision.message


def test_golden_reviews_through_parse_and_engine_match(opa_server: OpaServer) -> None:
    """Full reviews parsed by the webhook reach the same verdicts as the golden inputs."""
    engine = engine_for(opa_server)
    keys = frozenset({"gitwarden.dev/source-path"})
    for name, case in GOLDEN["cases"].items():
        req = review.parse(reviews.body(reviews.review_from_input(case["input"])), keys)
        decision = engine.decide(review.policy_input(req, **reviews.facts(case["input"])))
        assert decision.allowed is case["expect"]["allowed"], name


def test_readiness_needs_the_policy_and_its_data(opa_server: OpaServer) -> None:
    """ready() is true when the policy decides the probe, false for a path with no rule."""
    assert engine_for(opa_server).ready()
    assert not policy.OpaEngine(opa_server.url, "admission/no_such_rule", 1.0).ready()


def test_undefined_decision_is_an_engine_error(opa_server: OpaServer) -> None:
    """An undefined rule is never read as an allow."""
    engine = policy.OpaEngine(opa_server.url, "admission/no_such_rule", 1.0)
    with pytest.raises(policy.EngineError, match="undefined"):
        engine.decide(GOLDEN["cases"]["gitops_update_secret"]["input"])


def test_unreachable_opa_fails_fast() -> None:
    """Nothing listening: an EngineError well inside the timeout, with no retries."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    engine = policy.OpaEngine(f"http://{LOOPBACK}:{port}", "admission/decision", 1.0)
    started = time.monotonic()
    with pytest.raises(policy.EngineError) as excinfo:
        engine.decide(GOLDEN["cases"]["gitops_update_secret"]["input"])
    assert excinfo.value.kind == "unavailable"
    assert time.monotonic() - started < 0.5


def test_silent_opa_times_out_at_the_configured_timeout() -> None:
    """A server that accepts but never answers is cut off at the timeout, not retried."""
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = policy.OpaEngine(f"http://{LOOPBACK}:{port}", "admission/decision", 0.3)
        started = time.monotonic()
        with pytest.raises(policy.EngineError) as excinfo:
            engine.decide(GOLDEN["cases"]["gitops_update_secret"]["input"])
        elapsed = time.monotonic() - started
    assert excinfo.value.kind == "timeout"
    assert 0.25 < elapsed < 0.9


def test_engine_recovers_when_opa_comes_back(opa_server: OpaServer) -> None:
    """Stop OPA: unavailable. Start it again on the same port: the same client decides again."""
    engine = engine_for(opa_server)
    case = GOLDEN["cases"]["user_update_deployment_denied"]
    assert engine.decide(case["input"]).allowed is False
    opa_server.stop()
    try:
        with pytest.raises(policy.EngineError):
            engine.decide(case["input"])
        assert not engine.ready()
    finally:
        opa_server.start()
    assert engine.ready()
    assert engine.decide(case["input"]).reason == "not-gitops"


def test_proxy_variables_in_the_environment_never_see_a_policy_input(
    opa_server: OpaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY set in the webhook's environment: decisions still go straight to OPA."""
    with socket.socket() as proxy:
        proxy.bind((LOOPBACK, 0))
        proxy.listen(8)
        proxy.settimeout(0.2)
        url = f"http://{LOOPBACK}:{proxy.getsockname()[1]}"
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        case = GOLDEN["cases"]["user_update_deployment_denied"]
        assert engine_for(opa_server).decide(case["input"]).reason == "not-gitops"
        with pytest.raises(TimeoutError):
            proxy.accept()  # nobody connected to the proxy


def test_a_kept_alive_connection_opa_dropped_is_replaced_before_the_next_decision(
    opa_server: OpaServer,
) -> None:
    """OPA restarts between two decisions: the second one is decided, not failed."""
    engine = engine_for(opa_server)
    case = GOLDEN["cases"]["user_update_deployment_denied"]
    assert engine.decide(case["input"]).reason == "not-gitops"
    opa_server.stop()
    opa_server.start()
    assert engine.decide(case["input"]).reason == "not-gitops"


def test_a_connection_cut_mid_request_is_an_error_and_never_retried() -> None:
    """A server that reads the request and hangs up: EngineError after exactly one request."""
    requests_seen: list[bytes] = []
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        server.listen(8)
        server.settimeout(5)

        def hang_up() -> None:
            for _ in range(2):  # a retry would be the second connection
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    return
                with conn:
                    requests_seen.append(conn.recv(65536))

        thread = threading.Thread(target=hang_up)
        thread.start()
        engine = policy.OpaEngine(
            f"http://{LOOPBACK}:{server.getsockname()[1]}", "admission/decision", 1.0
        )
        with pytest.raises(policy.EngineError) as excinfo:
            engine.decide(GOLDEN["cases"]["gitops_update_secret"]["input"])
        server.settimeout(0.5)
        thread.join(timeout=10)
        engine.close()
    assert excinfo.value.kind == "unavailable"
    assert len(requests_seen) == 1
    assert requests_seen[0].startswith(b"POST /v1/data/admission/decision HTTP/1.1")


def test_data_pushed_to_opa_changes_the_next_identical_decision(tmp_path: Path) -> None:
    """The same input, decided again right after new data reaches OPA, gets the new verdict."""
    server = OpaServer(tmp_path, {"gitwarden": {"admission": GOLDEN["config"]}}, writable=True)
    server.start()
    try:
        engine = engine_for(server)
        case = GOLDEN["cases"]["user_update_deployment_denied"]["input"]
        assert engine.decide(case).reason == "not-gitops"
        data = json.loads(json.dumps(GOLDEN["config"]))
        data["exemptions"]["usernames"] = [case["userInfo"]["username"]]
        answer = requests.put(f"{server.url}/v1/data/gitwarden/admission", json=data, timeout=5)
        assert answer.status_code == 204
        assert engine.decide(case).reason == "exempt"
        engine.close()
    finally:
        server.stop()
