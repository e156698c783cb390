"""Prometheus metrics of the webhook, correct across gunicorn worker processes.

Owns the metric definitions and their exposition. With a multiprocess directory (set by the
serving entry point before any worker starts), every worker writes its samples there and
/metrics sums them; without one (tests, a single process) a private registry is used. Labels
carry only bounded values (result, mode, reason, error kind): never users or object names.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

# Admission latency budgets are milliseconds; the top buckets catch an engine near its timeout.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The webhook's counters and histogram, on their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self._registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "gitwarden_webhook_decisions_total",
            "Admission decisions by result, mode and policy reason.",
            ["result", "mode", "reason"],
            registry=self._registry,
        )
        self.latency = Histogram(
            "gitwarden_webhook_request_duration_seconds",
            "Time from receiving an AdmissionReview to answering it.",
            buckets=_BUCKETS,
            registry=self._registry,
        )
        self.lookups = Histogram(
            "gitwarden_webhook_lookup_duration_seconds",
            "Reads from the API server that decisions needed (the object behind a subresource, "
            "a namespace, a list for one managed object), by read and outcome.",
            ["read", "outcome"],
            buckets=_BUCKETS,
            registry=self._registry,
        )
        self.engine_errors = Counter(
            "gitwarden_webhook_policy_engine_errors_total",
            "Requests the policy engine could not decide, by error kind.",
            ["kind"],
            registry=self._registry,
        )
        self.fail_open_allows = Counter(
            "gitwarden_webhook_fail_open_allows_total",
            "Requests allowed without a policy decision because fail-open is on.",
            registry=self._registry,
        )
        self.unauthenticated = Counter(
            "gitwarden_webhook_unauthenticated_requests_total",
            "Reviews refused because the client presented no certificate from the client CA.",
            registry=self._registry,
        )
        self.decision_cache = Counter(
            "gitwarden_webhook_decision_cache_total",
            "Decisions by how the cache took part: hit (answered from memory), miss (asked of "
            "OPA, kept), uncacheable (asked of an OPA whose decisions are not kept).",
            ["result"],
            registry=self._registry,
        )
        self.bad_requests = Counter(
            "gitwarden_webhook_bad_requests_total",
            "Bodies rejected with HTTP 400.",
            registry=self._registry,
        )

    def exposition(self) -> bytes:
        """The text exposition of every worker's samples (or this process's)."""
        if self._multiprocess_dir is None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]  # untyped in the library
            registry, path=str(self._multiprocess_dir)
        )
        return generate_latest(registry)
