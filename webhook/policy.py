"""Admission decisions: the `DecisionEngine` port and its OPA implementation.

Owns the one call to the policy engine per request and the translation of its answer into a
`Decision`. Each request thread of a worker keeps its own opa-python-client (created on the
thread's first decision, after fork) with one kept-alive connection to OPA; the clients never
retry, time out well under the API server's deadline, and ignore the process environment
(no proxy, netrc or CA-bundle variables). An undefined or malformed decision and any transport
error become `EngineError`, which the app answers fail-closed (or open, if so configured).
Nothing is cached: every request is decided by OPA with the policy and data it holds at that
moment. It never logs and never sees object contents beyond the slim policy input.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

import requests
from opa_client import OpaClient

from webhook import decision as decision_mod
from webhook import opatransport


class EngineError(Exception):
    """The policy engine gave no usable decision. `kind` labels the metric."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"policy engine {kind}: {detail}")
        self.kind = kind


class DecisionEngine(Protocol):
    """Decides one admission request from the slim policy input."""

    def decide(self, policy_input: Mapping[str, Any]) -> decision_mod.Decision:
        """Return the decision, or raise `EngineError`."""
        ...

    def ready(self) -> bool:
        """Whether the engine is reachable and the policy and its data are loaded."""
        ...


# A request the policy can always decide: used by the readiness probe.
PROBE_INPUT: Mapping[str, Any] = {
    "operation": "UPDATE",
    "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
    "resource": {"group": "", "version": "v1", "resource": "configmaps"},
    "subResource": "",
    "name": "gitwarden-readiness-probe",
    "namespace": "gitwarden-readiness-probe",
    "dryRun": True,
    "namespaceProtected": False,
    "changedFields": [],
    "userInfo": {"username": "gitwarden:readiness-probe", "groups": []},
    "object": {"labels": {}, "annotations": {}},
    "oldObject": {"labels": {}, "annotations": {}},
}


def decision_from_result(result: Any) -> decision_mod.Decision:
    """Turn the policy's JSON answer into a `Decision`; anything malformed is an EngineError."""
    if not isinstance(result, dict) or not isinstance(result.get("allowed"), bool):
        raise EngineError("undefined", "the policy returned no decision")
    warnings = result.get("warnings", [])
    audit = result.get("audit", {})
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise EngineError("malformed", "decision.warnings is not a list of strings")
    if not isinstance(audit, dict) or not all(isinstance(v, str) for v in audit.values()):
        raise EngineError("malformed", "decision.audit is not a map of strings")
    return decision_mod.Decision(
        allowed=result["allowed"],
        reason=str(result.get("reason", "")),
        mode=str(result.get("mode", "enforce")),
        message=str(result.get("message", "")),
        warnings=tuple(warnings),
        audit=dict(audit),
    )


class _Client(OpaClient):  # type: ignore[misc]  # opa-python-client ships no type information
    """An OPA client whose HTTP session does not read the process environment.

    requests' default (`trust_env`) looks up proxy variables, ~/.netrc and CA-bundle
    variables on every call, a measurable share of each decision (see the README's webhook
    bench), and an HTTP(S)_PROXY in the webhook's environment would send every policy input
    through a proxy. OPA is a local sidecar, reached directly or not at all. Over plain HTTP
    the session is `opatransport`'s: one kept-alive connection, no cookies, no redirects.
    """

    def _init_session(self) -> requests.Session:
        if self.ssl:  # OPA behind TLS: the library's own session, still without the environment
            session: requests.Session = super()._init_session()
            session.trust_env = False
            return session
        session = opatransport.DirectSession()
        session.trust_env = False
        if self.headers:
            session.headers.update(self.headers)
        session.mount("http://", opatransport.KeepAliveAdapter(self.host, self.port))
        return session


class OpaEngine:
    """Decisions from an OPA server through opa-python-client, one client per thread."""

    def __init__(self, url: str, decision_path: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"OPA URL must be http(s)://host:port, got {url!r}")
        self._path = decision_path.strip("/")
        self._host, self._ssl = parsed.hostname, parsed.scheme == "https"
        self._port = parsed.port or (443 if self._ssl else 80)
        self._timeout = timeout
        # One client (one session, one kept-alive connection) per thread: requests' Session
        # is not documented as thread-safe, and a thread never waits for another's connection.
        self._local = threading.local()
        self._clients: list[_Client] = []
        self._lock = threading.Lock()

    def _client(self) -> _Client:
        client: _Client | None = getattr(self._local, "client", None)
        if client is None:
            # retries=0: a retry would only spend the API server's deadline on a dead engine.
            client = _Client(
                host=self._host, port=self._port, ssl=self._ssl, retries=0, timeout=self._timeout
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def decide(self, policy_input: Mapping[str, Any]) -> decision_mod.Decision:
        """Query the decision rule; transport errors, timeouts and bad answers raise EngineError."""
        try:
            answer = self._client().query_rule(dict(policy_input), self._path)
        except requests.Timeout as exc:
            raise EngineError("timeout", "no answer within the timeout") from exc
        except requests.ConnectionError as exc:
            raise EngineError("unavailable", "cannot connect") from exc
        except requests.RequestException as exc:
            raise EngineError("error", type(exc).__name__) from exc
        except ValueError as exc:  # a body that is not JSON
            raise EngineError("malformed", "answer is not JSON") from exc
        return decision_from_result(answer.get("result") if isinstance(answer, dict) else None)

    def ready(self) -> bool:
        """OPA answers, and the policy decides the probe request."""
        try:
            self.decide(PROBE_INPUT)
        except EngineError:
            return False
        return True

    def close(self) -> None:
        """Release every thread's connection."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close_connection()
