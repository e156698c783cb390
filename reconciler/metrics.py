"""The reconciler's Prometheus metrics, in a registry of their own.

Owns every metric name, its labels and the rule that keeps each label's values a small, known
set: results and actions are enums, verification failures are mapped from free text onto the
signature verifiers' reason codes (never a commit id, a key or a message), kinds must look like
Kubernetes kinds and are capped in number. The one label that carries a commit id is the info
gauge `gitwarden_revision_info`, and only for the current revision (the previous one is removed).
Must not serve HTTP (endpoints.py does) or use prometheus_client's global registry: two
instances in one process (tests, a future second target) must not collide.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import prometheus_client
from prometheus_client import exposition

from reconciler import changeset
from reconciler.signatures import rejections

CONTENT_TYPE = exposition.CONTENT_TYPE_LATEST
RESULTS = ("applied", "transient", "stalled")
GUARD_RESULTS = ("restored", "failed")
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
OTHER = "other"
MAX_KINDS = 100

# The verification failure reasons a label may take: the verifiers' codes, the commit policy's
# denial, the force-push refusal, and `other` for anything else.
POLICY_DENIED = "policy-denied"
FORCE_PUSH = "force-push"
VERIFY_REASONS = (
    rejections.UNSIGNED,
    rejections.MALFORMED_OBJECT,
    rejections.MALFORMED_SIGNATURE,
    rejections.UNSUPPORTED_SIGNATURE,
    rejections.UNTRUSTED_KEY,
    rejections.BAD_SIGNATURE,
    rejections.WRONG_NAMESPACE,
    rejections.KEY_NOT_VALID_AT_TIME,
    rejections.REVOKED_KEY,
    rejections.EXPIRED_KEY,
    rejections.TAG_NAME_MISMATCH,
    POLICY_DENIED,
    FORCE_PUSH,
    OTHER,
)

_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_CODE = re.compile(r"[a-z][a-z-]*")


def verify_reason(text: str) -> str:
    """The bounded label for a verification failure described by `text`.

    `text` may be a reason code, `code: detail` (as `verify.VerificationFailed` pairs it), or a
    refusal sentence; only the leading code is looked at, never the detail.
    """
    head = text.strip().split(":", 1)[0].strip().lower()
    if _CODE.fullmatch(head) and head in VERIFY_REASONS:
        return head
    if "not in the history" in text or "force" in head:
        return FORCE_PUSH
    return OTHER


class Metrics:
    """The metrics of one reconciler process; every method is safe to call from any thread."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self._wall = wall
        self._lock = threading.Lock()
        self._kinds: set[str] = set()
        self._commit: str | None = None
        reg = self.registry
        self._duration = prometheus_client.Histogram(
            "gitwarden_reconcile_duration_seconds",
            "Seconds one reconcile pass took, by result (applied, transient, stalled).",
            ["result"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._passes = prometheus_client.Counter(
            "gitwarden_reconcile_passes",
            "Reconcile passes finished, by result.",
            ["result"],
            registry=reg,
        )
        self._applied = prometheus_client.Counter(
            "gitwarden_objects_applied",
            "Objects each pass touched, by action (created, configured, unchanged, ...).",
            ["action"],
            registry=reg,
        )
        self._drift = prometheus_client.Counter(
            "gitwarden_drift_repairs",
            "Managed objects re-applied after a change outside Git, by kind.",
            ["kind"],
            registry=reg,
        )
        self._verify = prometheus_client.Counter(
            "gitwarden_verification_failures",
            "Revisions refused by signature verification or the commit policy, by reason.",
            ["reason"],
            registry=reg,
        )
        self._revision = prometheus_client.Gauge(
            "gitwarden_revision_info",
            "The commit last applied (1 for the current one only).",
            ["commit"],
            registry=reg,
        )
        self._last_success = prometheus_client.Gauge(
            "gitwarden_last_apply_success_timestamp_seconds",
            "Unix time of the last pass that applied a revision completely.",
            registry=reg,
        )
        self._leader = prometheus_client.Gauge(
            "gitwarden_leader", "1 while this replica holds the Lease, else 0.", registry=reg
        )
        self._watch_restarts = prometheus_client.Counter(
            "gitwarden_watch_restarts",
            "Watches of managed kinds started again (410 Gone, a dropped connection), by kind.",
            ["kind"],
            registry=reg,
        )
        self._guard = prometheus_client.Counter(
            "gitwarden_webhook_configuration_restores",
            "Times the self-guard found GitWarden's ValidatingWebhookConfiguration changed or"
            " deleted, by result (restored, failed: not put back).",
            ["result"],
            registry=reg,
        )
        self._guard_intact = prometheus_client.Gauge(
            "gitwarden_webhook_configuration_intact",
            "1 when the self-guard's last look found (or left) the webhook configuration as"
            " configured, 0 when it could not put it back.",
            registry=reg,
        )
        # Every series of a bounded label exists from the start, so a rate() over it works
        # before the first event and a dashboard tells "none" from "not scraped".
        for result in RESULTS:
            self._duration.labels(result)
            self._passes.labels(result)
        for action in changeset.Action:
            self._applied.labels(action.value)
        for reason in VERIFY_REASONS:
            self._verify.labels(reason)
        for result in GUARD_RESULTS:
            self._guard.labels(result)
        self._leader.set(0)

    def pass_finished(self, seconds: float, result: str) -> None:
        """One pass ended with `result` (one of RESULTS) after `seconds`."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
        self._duration.labels(result).observe(max(seconds, 0.0))
        self._passes.labels(result).inc()

    def applied(self, changes: changeset.ChangeSet) -> None:
        """Count a pass's changes by action."""
        for action, count in changes.counts().items():
            self._applied.labels(action.value).inc(count)

    def drift_repaired(self, kind: str) -> None:
        """One object of `kind` was re-applied after drift."""
        self._drift.labels(self._kind(kind)).inc()

    def verification_failed(self, reason: str) -> None:
        """A revision was refused; `reason` is free text, mapped onto VERIFY_REASONS."""
        self._verify.labels(verify_reason(reason)).inc()

    def revision(self, commit: str) -> None:
        """`commit` was applied completely, now."""
        label = commit if _COMMIT.fullmatch(commit) else OTHER
        with self._lock:
            if self._commit is not None and self._commit != label:
                self._revision.remove(self._commit)
            self._commit = label
            self._revision.labels(label).set(1)
        self._last_success.set(self._wall())

    def leading(self, is_leader: bool) -> None:
        """Whether this replica leads now."""
        self._leader.set(1 if is_leader else 0)

    def watch_restarted(self, kind: str) -> None:
        """The watch of `kind` was started again."""
        self._watch_restarts.labels(self._kind(kind)).inc()

    def webhook_configuration(self, intact: bool, result: str | None) -> None:
        """The self-guard looked: `intact` afterwards; `result` (GUARD_RESULTS) if it acted."""
        if result is not None:
            if result not in GUARD_RESULTS:
                raise ValueError(f"result must be one of {', '.join(GUARD_RESULTS)}")
            self._guard.labels(result).inc()
        self._guard_intact.set(1 if intact else 0)

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (CONTENT_TYPE)."""
        return bytes(prometheus_client.generate_latest(self.registry))

    def _kind(self, kind: str) -> str:
        # Kinds come from the repository's manifests and the cluster's discovery; a bound on
        # how many keeps a repository with thousands of CRDs from flooding the scraper.
        if not _KIND.fullmatch(kind):
            return OTHER
        with self._lock:
            if kind in self._kinds:
                return kind
            if len(self._kinds) >= MAX_KINDS:
                return OTHER
            self._kinds.add(kind)
            return kind
