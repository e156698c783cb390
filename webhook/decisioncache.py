"""The decision cache: an identical policy input answered again from memory, never a stale one.

Owns `CachedDecisions`, a `DecisionEngine` in front of `policy.OpaEngine`. A decision is a pure
function of the policy input, the policy and its data (the policy reads no clock, makes no
call out and reads nothing else), and every fact the webhook looked up (parents, namespaces,
pods) is part of the input. So a decision may be answered again for the same input, byte for
byte as it would be sent to OPA, as long as the policy and data that made it are still the
ones OPA decides with. That is what is checked:

* a decision is kept only when the OPA server that made it proved, over the connection that
  carried it, that its policy and data are fixed while it runs (it refused a write to its API
  and loads no bundles; `policy.Instance.fixed`); from any other server nothing is kept;
* the cache belongs to one server process at a time (its `labels.id`): the first decision
  from another one empties it;
* a kept decision is answered only on a request thread whose own connection to that same
  server is still open (one poll of the idle socket), or, by `recall` on a thread that asks
  OPA nothing (the serving worker's event loop), while the engine's witness connection to
  that server is (`policy.OpaEngine.witnessed`). A server that ends closes every connection
  to it, so after an OPA restart, the way its policy or data can change, the very next
  request of every thread goes to the new server.

Errors are never kept (they are raised, as without the cache), nor are decisions made while
the server could not be checked, nor those of inputs over `MAX_INPUT_BYTES`. The readiness
probe always asks OPA. Entries are bounded (least recently used go first), per worker
process. It logs once when the server it caches for changes or declines to be cached, and
counts hits and misses through `count`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from webhook import decision as decision_mod
from webhook import policy

log = logging.getLogger("gitwarden.webhook.decisions")

HIT, MISS, UNCACHEABLE = "hit", "miss", "uncacheable"
"""What `count` is told for each decision: answered from memory; asked of a server whose
decisions are kept; asked and not kept (the server is not fixed or not identified, or the
input is larger than `MAX_INPUT_BYTES`)."""

MAX_INPUT_BYTES = 16 * 1024
"""Inputs larger than this are always asked, never kept: a person's update is about 1 KiB, and
objects with thousands of labels must not let a client fill a worker's memory (entries x
this is the most a cache holds in keys: 64 MiB at the chart's 4096)."""


class IdentifyingEngine(Protocol):
    """What the cache needs of the engine behind it (`policy.OpaEngine`)."""

    def decide_and_identify(
        self, policy_input: Mapping[str, Any]
    ) -> tuple[decision_mod.Decision, policy.Instance | None]:
        """Decide and name the server that decided (None: not known for certain)."""
        ...

    def serving(self) -> policy.Instance | None:
        """The server behind this thread's still-open connection, if one was identified."""
        ...

    def witnessed(self) -> policy.Instance | None:
        """The server behind an idle connection any thread may poll, while it stays open."""
        ...

    def ready(self) -> bool:
        """Whether the engine answers and the policy is loaded."""
        ...


class CachedDecisions:
    """Decisions of one fixed OPA server, kept for identical inputs while it serves."""

    def __init__(
        self, engine: IdentifyingEngine, entries: int, count: Callable[[str], None]
    ) -> None:
        if entries < 1:
            raise ValueError("a decision cache holds at least one entry")
        self._engine, self._entries, self._count = engine, entries, count
        self._lock = threading.Lock()
        self._kept: OrderedDict[bytes, decision_mod.Decision] = OrderedDict()
        self._server = ""  # the labels.id every kept decision came from
        self._declined = ""  # the last server not cached for, logged once

    def decide(self, policy_input: Mapping[str, Any]) -> decision_mod.Decision:
        """The kept decision for this exact input from the serving server, else OPA's."""
        key = orjson.dumps(policy_input)
        if len(key) > MAX_INPUT_BYTES:
            self._count(UNCACHEABLE)
            return self._engine.decide_and_identify(policy_input)[0]
        found = self._kept_from(key, self._engine.serving())
        if found is not None:
            return found
        decision, server = self._engine.decide_and_identify(policy_input)
        if server is None or not server.fixed:
            self._count(UNCACHEABLE)
            if server is not None and server.id != self._declined:
                self._declined = server.id
                log.warning(
                    "decision cache off for OPA %s: %s", server.id or "(unnamed)", server.why_not
                )
            return decision
        self._count(MISS)
        with self._lock:
            if server.id != self._server:
                if self._server:
                    log.info(
                        "decision cache emptied: OPA %s now decides (was %s), %d decisions dropped",
                        server.id,
                        self._server,
                        len(self._kept),
                    )
                else:
                    log.info(
                        "decision cache on: OPA %s refuses writes and loads no bundles", server.id
                    )
                self._kept.clear()
                self._server = server.id
            self._kept[key] = dataclasses.replace(decision, cached=True)  # as a hit answers it
            if len(self._kept) > self._entries:
                self._kept.popitem(last=False)
        return decision

    def recall(self, policy_input: Mapping[str, Any]) -> decision_mod.Decision | None:
        """The kept decision for this exact input, or None; never asks OPA, never waits.

        For a thread that must not wait on OPA (the serving worker's event loop): a decision
        is answered only while the engine's witness connection to the server that made it is
        still open. None (not counted: whoever then calls `decide` counts that) when nothing
        is kept for the input, the input is too large to be kept, or no open connection names
        the server the cache holds decisions of.
        """
        key = orjson.dumps(policy_input)
        if len(key) > MAX_INPUT_BYTES:
            return None
        return self._kept_from(key, self._engine.witnessed())

    def _kept_from(
        self, key: bytes, serving: policy.Instance | None
    ) -> decision_mod.Decision | None:
        """The decision kept for `key` if `serving` is the fixed server it came from (a hit)."""
        if serving is None or not serving.fixed:
            return None
        with self._lock:
            found = self._kept.get(key) if serving.id == self._server else None
            if found is not None:
                self._kept.move_to_end(key)
        if found is not None:
            self._count(HIT)
        return found

    def ready(self) -> bool:
        """The engine's own readiness: OPA is asked, never the cache."""
        return self._engine.ready()

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)
