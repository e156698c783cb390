"""Admission decisions: the `DecisionEngine` port and its OPA implementation.

Owns the one call to the policy engine per request and the translation of its answer into a
`Decision`. Each request thread of a worker keeps its own opa-python-client (created on the
thread's first decision, after fork) with one kept-alive connection to OPA; the clients never
retry, time out well under the API server's deadline, and ignore the process environment
(no proxy, netrc or CA-bundle variables). An undefined or malformed decision and any transport
error become `EngineError`, which the app answers fail-closed (or open, if so configured).
Nothing is cached here. What a cache needs to know is said here, per connection: which OPA
server process a decision came from (its `labels.id`), whether that server's policy and data
are fixed for as long as it runs (it refuses a write to its API and loads no bundles), and
whether the connection to it is still open (`OpaEngine.decide_and_identify`,
`OpaEngine.serving`, and for a thread that makes no decisions, `OpaEngine.witnessed`). It
never logs and never sees object contents beyond the slim policy input.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
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


@dataclass(frozen=True)
class Instance:
    """One OPA server process, as checked over one connection to it."""

    id: str
    """Its `labels.id` (GET /v1/config): a random id each OPA process draws at start."""
    fixed: bool
    """Its policy and data cannot change while it runs: a write to its API is refused (401 or
    403) and its configuration names no bundles and no discovery."""
    why_not: str = ""
    """Why it is not `fixed` (for the log)."""


# OPA configuration sections through which a running server loads new policy or data.
_LOADING_SECTIONS = ("bundles", "bundle", "discovery")
# A write that changes nothing: an empty JSON Patch of the data root. A server that accepts
# writes answers 204 (and has applied nothing); one under `--authorization` refuses it.
_WRITE_PROBE = b"[]"
# Each of the two checks of a new connection waits at most this long (or the OPA timeout, if
# shorter): they run before the first decision on it is answered, so a slow OPA adds at most
# twice this to one request per connection, and a check that times out only means nothing
# from that connection is cached (the connection is dropped; the next one is checked again).
IDENTIFY_TIMEOUT = 0.25


def _identify(
    adapter: opatransport.KeepAliveAdapter, headers: Mapping[str, str], timeout: float
) -> Instance:
    """Ask the server behind `adapter`'s connection who it is and whether it takes writes.

    Raises OSError-derived requests errors as any exchange does; an answer it cannot read is an
    `Instance` that is not fixed, never an exception.
    """
    fields = {**headers, "Accept-Encoding": "identity"}
    config = adapter.exchange("GET", "/v1/config", fields, b"", timeout, "/v1/config")
    result: Any = None
    if config.status_code == 200:
        with contextlib.suppress(orjson.JSONDecodeError):
            result = orjson.loads(config.content)
    result = result.get("result") if isinstance(result, dict) else None
    if not isinstance(result, dict):
        result = {}
    labels = result.get("labels")
    server_id = labels.get("id") if isinstance(labels, dict) else None
    if not isinstance(server_id, str) or not server_id:
        why = f"GET /v1/config named no labels.id (HTTP {config.status_code})"
        return Instance("", fixed=False, why_not=why)
    loading = [name for name in _LOADING_SECTIONS if result.get(name)]
    if loading:
        why = f"it is configured with {', '.join(loading)}"
        return Instance(server_id, fixed=False, why_not=why)
    probe_fields = {**fields, "Content-Type": "application/json"}
    probe = adapter.exchange("PATCH", "/v1/data", probe_fields, _WRITE_PROBE, timeout, "/v1/data")
    if probe.status_code not in (401, 403):
        return Instance(
            server_id,
            fixed=False,
            why_not=f"it accepts writes to its API (an empty PATCH got HTTP {probe.status_code}; "
            "run it with --authorization=basic and policies/opaserver/authz.rego)",
        )
    return Instance(server_id, fixed=True)


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
        session = opatransport.DirectSession(self.host, self.port)
        if self.headers:
            session.headers.update(self.headers)
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
        # The witness: one more connection to OPA that carries no decision, checked like a
        # thread's and then left idle, so any thread can see the server is still the same one
        # (`witnessed`) with one poll and without waiting on a connection in use.
        self._witness: tuple[opatransport.KeepAliveAdapter, Instance] | None = None
        self._witness_lock = threading.Lock()
        self._witness_due = True  # none yet, or the last one ended: a request thread opens one

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
        return self._decide(self._client(), policy_input)

    def decide_and_identify(
        self, policy_input: Mapping[str, Any]
    ) -> tuple[decision_mod.Decision, Instance | None]:
        """Decide, and name the server that decided when one connection carried both.

        The server is checked (`_identify`) on the first decision of each new connection, after
        the decision and over the same connection; None when that check failed or the
        connection changed in between (the decision stands, it is just not attributed), or
        OPA is reached over TLS (requests' own session: no connection to follow).
        """
        client = self._client()
        decision = self._decide(client, policy_input)
        adapter = _adapter(client)
        if adapter is None:
            return decision, None
        connection = adapter.connections
        known: tuple[int, Instance] | None = getattr(self._local, "identified", None)
        if known is not None and known[0] == connection:
            return decision, known[1]
        try:
            instance = _identify(
                adapter, client._session.headers, min(self._timeout, IDENTIFY_TIMEOUT)
            )
        except requests.RequestException:
            return decision, None
        if adapter.connections != connection:  # OPA closed it after answering: not the same one
            return decision, None
        self._local.identified = (connection, instance)
        if instance.fixed and self._witness_due:
            self._open_witness(client._session.headers)
        return decision, instance

    def witnessed(self) -> Instance | None:
        """The server the witness connection was checked against, while it stays open.

        For any thread, the serving worker's event loop included: one poll of an idle
        connection, under a lock held for nothing else, no bytes sent and never a wait on OPA.
        None when there is no witness or OPA closed it (the server ended, restarted or timed
        the idle connection out); the next request thread to make a new connection's first
        decision on a fixed server then opens another (`decide_and_identify`).
        """
        with self._witness_lock:
            witness = self._witness
            if witness is None:
                return None
            if witness[0].still_open():
                return witness[1]
            self._witness, self._witness_due = None, True
        return None

    def _open_witness(self, headers: Mapping[str, str]) -> None:
        """Open and check the witness connection, on the request thread that found it due.

        Three exchanges with OPA (connect, the two checks of `_identify`), once per server
        process and worker, or after OPA closed an idle witness. One thread at a time; a
        failure only leaves it due for the next one.
        """
        with self._witness_lock:
            if not self._witness_due:
                return
            self._witness_due = False  # this thread opens it; others carry on
        adapter = opatransport.KeepAliveAdapter(self._host, self._port)
        instance: Instance | None = None
        # The decision this thread carries stands whatever happens here: a witness that cannot
        # be opened or checked only leaves it due.
        with contextlib.suppress(requests.RequestException, OSError, ValueError):
            instance = _identify(adapter, headers, min(self._timeout, IDENTIFY_TIMEOUT))
        kept = instance is not None and instance.fixed and adapter.connections == 1
        with self._witness_lock:
            if kept and instance is not None and adapter.still_open():
                self._witness = (adapter, instance)
                return
            self._witness_due = True
        adapter.close()

    def serving(self) -> Instance | None:
        """The server this thread's last decision came from, while its connection stays open.

        One poll of the idle connection, no bytes sent. None when this thread has no checked
        connection or OPA closed it (a server that ended, restarted or timed the connection
        out): the caller must then ask OPA.
        """
        known: tuple[int, Instance] | None = getattr(self._local, "identified", None)
        client: _Client | None = getattr(self._local, "client", None)
        if known is None or client is None:
            return None
        adapter = _adapter(client)
        if adapter is None or adapter.connections != known[0] or not adapter.still_open():
            return None
        return known[1]

    def _decide(self, client: _Client, policy_input: Mapping[str, Any]) -> decision_mod.Decision:
        try:
            answer = client.query_rule(dict(policy_input), self._path)
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
        """OPA answers, and the policy decides the probe request (never from a cache)."""
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
        with self._witness_lock:
            witness, self._witness, self._witness_due = self._witness, None, True
        if witness is not None:
            witness[0].close()


def _adapter(client: _Client) -> opatransport.KeepAliveAdapter | None:
    session = client._session  # the session this module's _Client made
    return session.adapter if isinstance(session, opatransport.DirectSession) else None
