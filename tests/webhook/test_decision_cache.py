"""The decision cache against real OPA servers: kept only while a fixed server serves.

Each test starts its own `opa run --server` (locked like the chart's sidecar unless the test
asks for a writable one) and drives `policy.OpaEngine` behind `decisioncache.CachedDecisions`
on the test's thread, as a request thread of a worker does. "OPA was asked" is read from OPA's
own /metrics, so a hit is proved by OPA not having seen the query.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness.services import OpaServer
from tests.webhook import reviews
from webhook import decisioncache, policy

GOLDEN = reviews.golden()
DENIED = GOLDEN["cases"]["user_update_deployment_denied"]["input"]
USER = DENIED["userInfo"]["username"]


def _server(tmp_path: Path, *, exempt: tuple[str, ...] = (), **kwargs: Any) -> OpaServer:
    config = json.loads(json.dumps(GOLDEN["config"]))
    config["exemptions"]["usernames"] = list(exempt)
    return OpaServer(tmp_path, {"gitwarden": {"admission": config}}, **kwargs)


def _cache(
    server: OpaServer, entries: int = 100
) -> tuple[decisioncache.CachedDecisions, policy.OpaEngine, list[str]]:
    engine = policy.OpaEngine(server.url, "admission/decision", 1.0)
    counted: list[str] = []
    return decisioncache.CachedDecisions(engine, entries, counted.append), engine, counted


def _restart(server: OpaServer, tmp_path: Path, *, exempt: tuple[str, ...] = ()) -> None:
    """Stop the server and start a new process on the same port with new data."""
    server.stop()
    server.data = _server(tmp_path, exempt=exempt).data
    server.start()


def _queries_seen(server: OpaServer) -> int:
    """How many decision queries (POSTs to the data API) this OPA process has answered."""
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    pattern = (
        r"^http_request_duration_seconds_count"
        r'\{code="200",handler="v1/data",method="post"\} (\d+)'
    )
    return sum(int(n) for n in re.findall(pattern, text, re.MULTILINE))


def test_a_fixed_servers_decision_is_answered_again_without_asking_it(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        first = cache.decide(DENIED)
        again = cache.decide(DENIED)
        assert (first.allowed, first.reason, first.cached) == (False, "not-gitops", False)
        assert again.cached
        assert (again.allowed, again.reason, again.message) == (False, "not-gitops", first.message)
        assert counted == [decisioncache.MISS, decisioncache.HIT]
        assert _queries_seen(server) == 1
        other = {**DENIED, "name": "another"}
        assert not cache.decide(other).cached  # another input, even one field, is asked again
        assert _queries_seen(server) == 2
        # The same person and change, now in the break-glass group: a different input, so the
        # cached denial is never theirs, and the denial stays cached for the request without it.
        groups = [*DENIED["userInfo"]["groups"], "gitwarden:break-glass"]
        glass = {**DENIED, "userInfo": {**DENIED["userInfo"], "groups": groups}}
        broken = cache.decide(glass)
        assert (broken.allowed, broken.reason, broken.cached) == (True, "break-glass", False)
        assert cache.decide(DENIED).reason == "not-gitops"
        assert _queries_seen(server) == 3
        engine.close()
    finally:
        server.stop()


def test_an_opa_restarted_with_new_data_decides_the_very_next_identical_request(
    tmp_path: Path,
) -> None:
    """The way a locked server's data changes is a new process: no kept decision survives it."""
    server = _server(tmp_path)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        assert cache.decide(DENIED).reason == "not-gitops"
        assert cache.decide(DENIED).cached
        _restart(server, tmp_path, exempt=(USER,))  # same port, new process
        after = cache.decide(DENIED)
        assert (after.allowed, after.reason, after.cached) == (True, "exempt", False)
        assert cache.decide(DENIED).cached  # kept again, from the new server
        _restart(server, tmp_path)
        assert cache.decide(DENIED).reason == "not-gitops"
        assert counted == [
            decisioncache.MISS,
            decisioncache.HIT,
            decisioncache.MISS,
            decisioncache.HIT,
            decisioncache.MISS,
        ]
        engine.close()
    finally:
        server.stop()


def test_threads_that_knew_the_old_server_each_ask_the_new_one(tmp_path: Path) -> None:
    """Two request threads, both with kept decisions; after a restart neither answers from them."""
    server = _server(tmp_path)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        asked: queue.Queue[str] = queue.Queue()
        seen: queue.Queue[tuple[str, bool]] = queue.Queue()

        def request_thread() -> None:
            while asked.get() == "decide":
                decision = cache.decide(DENIED)
                seen.put((decision.reason, decision.cached))

        other = threading.Thread(target=request_thread)
        other.start()
        try:
            for _ in range(2):
                asked.put("decide")
                seen.get(timeout=10)
            assert not cache.decide(DENIED).cached  # this thread's first: asked and checked
            assert cache.decide(DENIED).cached  # this thread's connection, the same server
            _restart(server, tmp_path, exempt=(USER,))  # same port, new process
            asked.put("decide")
            assert seen.get(timeout=10) == ("exempt", False)
            after = cache.decide(DENIED)  # this thread's connection ended with the old server
            assert (after.reason, after.cached) == ("exempt", False)
            assert counted.count(decisioncache.MISS) == 4  # each thread, before and after
        finally:
            asked.put("stop")
            other.join(10)
        engine.close()
    finally:
        server.stop()


def test_nothing_is_kept_from_a_server_that_accepts_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = _server(tmp_path, writable=True)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        with caplog.at_level(logging.WARNING, logger="gitwarden.webhook.decisions"):
            assert cache.decide(DENIED).reason == "not-gitops"
            assert not cache.decide(DENIED).cached
        data = _server(tmp_path, exempt=(USER,)).data["gitwarden"]["admission"]
        answer = requests.put(f"{server.url}/v1/data/gitwarden/admission", json=data, timeout=5)
        assert answer.status_code == 204
        assert cache.decide(DENIED).reason == "exempt"  # the push decides the very next request
        assert counted == [decisioncache.UNCACHEABLE] * 3
        assert len(cache) == 0
        warned = [r.getMessage() for r in caplog.records]
        assert len(warned) == 1  # once per server, not once per request
        assert "accepts writes to its API" in warned[0]
        assert "--authorization=basic" in warned[0]
        engine.close()
    finally:
        server.stop()


def test_the_locked_server_refuses_every_write_and_still_decides(tmp_path: Path) -> None:
    """Pushing data or a policy to the chart's sidecar fails, so nothing can go around the cache."""
    server = _server(tmp_path)
    server.start()
    try:
        data = _server(tmp_path, exempt=(USER,)).data["gitwarden"]["admission"]
        writes = [
            requests.put(f"{server.url}/v1/data/gitwarden/admission", json=data, timeout=5),
            requests.patch(f"{server.url}/v1/data", json=[], timeout=5),
            requests.delete(f"{server.url}/v1/data/gitwarden", timeout=5),
            requests.put(f"{server.url}/v1/policies/x", data="package x\nallow := true", timeout=5),
            requests.delete(f"{server.url}/v1/policies/admission.rego", timeout=5),
        ]
        assert [w.status_code for w in writes] == [401] * len(writes)
        cache, engine, _ = _cache(server)
        assert cache.decide(DENIED).reason == "not-gitops"
        engine.close()
    finally:
        server.stop()


def test_a_server_that_loads_bundles_is_not_cached(tmp_path: Path) -> None:
    """A bundle can bring new policy or data into a running server: its decisions are not kept."""
    config = tmp_path / "opa-config.yaml"
    config.write_text(
        "services:\n  nowhere:\n    url: http://127.0.0.1:9\n"
        "bundles:\n  policy:\n    service: nowhere\n    resource: bundle.tar.gz\n"
    )
    server = _server(tmp_path, args=(f"--config-file={config}",))
    server.start()
    try:
        cache, engine, counted = _cache(server)
        cache.decide(DENIED)
        cache.decide(DENIED)
        assert counted == [decisioncache.UNCACHEABLE] * 2
        engine.close()
    finally:
        server.stop()


def test_errors_are_raised_every_time_and_never_kept(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.start()
    cache, engine, counted = _cache(server)
    assert cache.decide(DENIED).reason == "not-gitops"
    server.stop()
    for _ in range(2):
        with pytest.raises(policy.EngineError):
            cache.decide(DENIED)
    assert counted == [decisioncache.MISS]
    engine.close()


def test_the_least_recently_used_decision_goes_first(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.start()
    try:
        cache, engine, _ = _cache(server, entries=2)
        a, b, c = ({**DENIED, "name": name} for name in ("a", "b", "c"))
        cache.decide(a)
        cache.decide(b)
        assert cache.decide(a).cached  # a is now the most recently used
        cache.decide(c)  # b goes
        assert len(cache) == 2
        assert cache.decide(a).cached
        assert not cache.decide(b).cached
        engine.close()
    finally:
        server.stop()


def test_readiness_always_asks_the_server(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.start()
    cache, engine, _ = _cache(server)
    assert cache.ready()
    server.stop()
    assert not cache.ready()
    engine.close()


def test_a_large_input_is_always_asked_and_never_kept(tmp_path: Path) -> None:
    """Objects with thousands of labels cannot fill a worker's memory through the cache."""
    server = _server(tmp_path)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        labels = {f"label-{i}": "x" * 40 for i in range(400)}
        large = {
            **DENIED,
            "object": {**DENIED["object"], "labels": {**labels, **DENIED["object"]["labels"]}},
        }
        assert len(json.dumps(large)) > decisioncache.MAX_INPUT_BYTES
        for _ in range(2):
            assert cache.decide(large).reason == "not-gitops"
        assert counted == [decisioncache.UNCACHEABLE] * 2
        assert len(cache) == 0
        assert _queries_seen(server) == 2
        engine.close()
    finally:
        server.stop()


def test_every_opa_process_names_itself_anew_even_when_configured_with_an_id(
    tmp_path: Path,
) -> None:
    """The cache tells servers apart by labels.id; OPA draws it at start and overrides a
    configured one (checked here, so an OPA upgrade that stopped doing so fails this test)."""
    config = tmp_path / "opa-config.yaml"
    config.write_text("labels:\n  id: configured-id\n")
    server = _server(tmp_path, args=(f"--config-file={config}",))
    ids = []
    for _ in range(2):
        server.start()
        try:
            ids.append(
                requests.get(f"{server.url}/v1/config", timeout=5).json()["result"]["labels"]["id"]
            )
        finally:
            server.stop()
    assert "configured-id" not in ids
    assert ids[0] != ids[1]


def _recall_elsewhere(cache: decisioncache.CachedDecisions, policy_input: Any) -> Any:
    """`recall` on a thread that has never asked OPA (as the worker's event loop)."""
    found: list[Any] = []
    thread = threading.Thread(target=lambda: found.append(cache.recall(policy_input)))
    thread.start()
    thread.join(10)
    assert len(found) == 1
    return found[0]


def test_recall_answers_a_kept_decision_on_any_thread_while_its_server_serves(
    tmp_path: Path,
) -> None:
    """The event loop's lookup: no OPA query, never a decision the running server did not make."""
    server = _server(tmp_path)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        assert _recall_elsewhere(cache, DENIED) is None  # nothing kept yet, nothing counted
        assert cache.decide(DENIED).reason == "not-gitops"
        recalled = _recall_elsewhere(cache, DENIED)
        assert (recalled.allowed, recalled.reason, recalled.cached) == (False, "not-gitops", True)
        assert _recall_elsewhere(cache, {**DENIED, "name": "another"}) is None
        assert counted == [decisioncache.MISS, decisioncache.HIT]
        assert _queries_seen(server) == 1
        _restart(server, tmp_path, exempt=(USER,))  # same port, new process
        assert _recall_elsewhere(cache, DENIED) is None  # the witness ended with the old server
        assert cache.decide(DENIED).reason == "exempt"  # a request thread asks the new one
        after = _recall_elsewhere(cache, DENIED)
        assert (after.allowed, after.reason, after.cached) == (True, "exempt", True)
        assert counted == [decisioncache.MISS, decisioncache.HIT] * 2
        engine.close()
        assert _recall_elsewhere(cache, DENIED) is None  # a closed engine has no witness
    finally:
        server.stop()


def test_recall_answers_nothing_from_a_server_that_accepts_writes(tmp_path: Path) -> None:
    server = _server(tmp_path, writable=True)
    server.start()
    try:
        cache, engine, counted = _cache(server)
        for _ in range(2):
            assert cache.decide(DENIED).reason == "not-gitops"
            assert _recall_elsewhere(cache, DENIED) is None
        assert counted == [decisioncache.UNCACHEABLE] * 2
        engine.close()
    finally:
        server.stop()
