"""The OPA engine against a real `opa run --server`: golden decisions, timeouts, recovery."""

from __future__ import annotations

import socket
import time

import pytest

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
