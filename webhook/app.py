"""The Flask application: HTTP routes of the webhook and nothing else.

Owns request handling, which reads top to bottom as early exits: too large or malformed -> 400
with a reason; policy engine failure -> an explicit fail-closed (or configured fail-open)
answer; otherwise the policy's decision. It is the only module that imports Flask. One log
line per decision names the request (kind, namespace/name, user, verdict), never its contents.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from webhook import config as config_mod
from webhook import decision as decision_mod
from webhook import metrics as metrics_mod
from webhook import parents as parents_mod
from webhook import policy, review
from webhook import settings as settings_mod

log = logging.getLogger("gitwarden.webhook")

UNAVAILABLE = (
    "GitWarden: policy engine unavailable, so this change to a GitOps-managed object cannot be "
    "checked and is denied (fail-closed). Retry shortly; make the change through Git; or, in an "
    "emergency, use the break-glass group."
)

LOOKUP_FAILED = (
    "GitWarden: cannot read the object (or namespace) this request acts on, so it cannot be "
    "checked and is denied (fail-closed). Retry shortly or make the change through Git."
)


def create_app(
    settings: settings_mod.WebhookSettings,
    engine: policy.DecisionEngine | None = None,
    metrics: metrics_mod.Metrics | None = None,
    parents: parents_mod.ParentLookup | None = None,
    admission: config_mod.AdmissionConfig | None = None,
) -> Flask:
    """Build the app. Collaborators are explicit: tests pass their own engine and metrics.

    `admission` (by default read from settings.admission_config) says which parents the
    webhook may read and which allowances depend on a namespace being deleted.
    """
    if admission is None:
        admission = (
            config_mod.AdmissionConfig()
            if settings.admission_config is None
            else config_mod.load(settings.admission_config)
        )
    parent_rules = {(p.group, p.resource, p.subresource) for p in admission.parent_rules}
    terminating_users = frozenset(
        u for a in admission.system_allowances if a.namespace_terminating for u in a.usernames
    )
    if engine is None:
        engine = policy.OpaEngine(settings.opa_url, settings.decision_path, settings.opa_timeout)
    if metrics is None:
        metrics = metrics_mod.Metrics(settings.metrics_dir)
    annotation_keys = frozenset({settings.path_annotation})
    app = Flask("gitwarden-webhook")
    lookup = _LazyLookup(settings, parents)

    managed_selector = f"{admission.managed_label.key}={admission.managed_label.value}"

    def holds_managed(req: review.AdmissionRequest) -> bool:
        if not (req.resource_group == "" and req.resource == "namespaces"):
            return False
        return any(
            lookup.get().any_labelled(group, version, resource, req.name, managed_selector)
            for group, version, resource in admission.namespace_content_kinds
        )

    def pod_live(req: review.AdmissionRequest) -> bool:
        # Impersonation can claim any pod-name and pod-uid extras; a real pod-bound token
        # names a live pod (the API server checks that at authentication). Asked only for
        # the GitOps username, and only when configured.
        if not (
            admission.verify_pod_live
            and req.pod_name
            and req.username in admission.gitops_usernames
        ):
            return False
        pod = lookup.get().metadata("", "v1", "pods", admission.namespace, req.pod_name)
        return (
            pod is not None
            and not pod.terminating
            and bool(req.pod_uid)
            and (pod.uid == req.pod_uid)
        )

    def validate(
        namespace_protected: bool = False, parent: bool = False, namespace_delete: bool = False
    ) -> tuple[Response, int]:
        started = time.perf_counter()
        body = _read_body(settings.max_body_bytes)
        if body is None:
            return _bad_request(metrics, f"body is larger than {settings.max_body_bytes} bytes")
        try:
            req = review.parse(body, annotation_keys)
        except review.MalformedReview as exc:
            return _bad_request(metrics, str(exc))
        try:
            if parent:
                req = _with_parent_metadata(req, lookup, annotation_keys, parent_rules)
            terminating = req.username in terminating_users and _namespace_terminating(req, lookup)
            holds = namespace_delete and req.operation == "DELETE" and holds_managed(req)
            live = pod_live(req)
            decision = engine.decide(
                review.policy_input(
                    req,
                    namespace_protected=namespace_protected,
                    namespace_terminating=terminating,
                    namespace_holds_managed=holds,
                    pod_live=live,
                )
            )
        except (policy.EngineError, parents_mod.LookupFailed) as exc:
            decision = _undecided(metrics, req, exc, settings.fail_open)
        metrics.decisions.labels(
            "allow" if decision.allowed else "deny", decision.mode, decision.reason
        ).inc()
        elapsed = time.perf_counter() - started
        metrics.latency.observe(elapsed)
        log.info(
            "%s %s %s by %s: %s (%s, %s) in %.1f ms",
            req.uid,
            req.operation.lower(),
            req.ref + (f"/{req.sub_resource}" if req.sub_resource else ""),
            req.username,
            "allowed" if decision.allowed else "denied",
            decision.reason,
            decision.mode,
            elapsed * 1000,
        )
        return jsonify(review.response(req.uid, decision)), 200

    @app.post("/validate")
    def validate_scoped() -> tuple[Response, int]:
        return validate()

    @app.post("/validate/parent")
    @app.post("/validate/scale")  # the path of earlier registrations
    def validate_parent() -> tuple[Response, int]:
        # Scale, Eviction, Binding, TokenRequest and CONNECT requests carry no labels of the
        # object they act on; their webhook has no objectSelector and is decided on the
        # parent's metadata, for the configured parent kinds only.
        return validate(parent=True)

    @app.post("/validate/namespace-delete")
    def validate_namespace_delete() -> tuple[Response, int]:
        # Deleting a namespace deletes what is in it: the webhook looks for managed objects.
        return validate(namespace_delete=True)

    @app.post("/validate/protected-namespace")
    def validate_protected_namespace() -> tuple[Response, int]:
        # Only the protected-namespace webhook, whose namespaceSelector the API server has
        # already applied, is configured with this path.
        return validate(namespace_protected=True)

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok\n", 200

    @app.get("/readyz")
    def readyz() -> tuple[str, int]:
        if engine.ready():
            return "ok\n", 200
        return "policy engine unreachable or policy not loaded\n", 503

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), mimetype=metrics.content_type)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        # Werkzeug's HTTP errors (404, 405) keep their status; anything else is a bug, answered
        # without a stack trace. The API server treats a non-200 answer as a failed call and
        # applies failurePolicy (Fail), so this is still a denial, never an allow.
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 500:
            return jsonify({"error": getattr(exc, "description", str(exc))}), code
        # The type only: an exception's text could quote request contents.
        log.error(
            "internal error handling %s %s: %s", request.method, request.path, type(exc).__name__
        )
        return jsonify({"error": "internal error"}), 500

    return app


def _bad_request(metrics: metrics_mod.Metrics, reason: str) -> tuple[Response, int]:
    metrics.bad_requests.inc()
    log.warning("rejected malformed AdmissionReview: %s", reason)
    return jsonify({"error": "malformed AdmissionReview", "reason": reason}), 400


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit`.

    An oversized body is drained (up to 4x the limit, in chunks, never kept) so the client
    can read the 400 instead of seeing its connection cut mid-upload.
    """
    data = request.stream.read(limit + 1)
    if len(data) <= limit:
        return data
    remaining = 3 * limit
    while remaining > 0 and (chunk := request.stream.read(min(remaining, 1 << 16))):
        remaining -= len(chunk)
    return None


class _LazyLookup:
    """Builds the parent lookup on first use, so a worker starts even without cluster access."""

    def __init__(
        self,
        settings: settings_mod.WebhookSettings,
        given: parents_mod.ParentLookup | None,
    ) -> None:
        self._settings, self._lookup = settings, given
        self._lock = threading.Lock()

    def get(self) -> parents_mod.ParentLookup:
        with self._lock:
            if self._lookup is None:
                try:
                    self._lookup = parents_mod.KubeParentLookup(
                        self._settings.kubeconfig, self._settings.opa_timeout
                    )
                except Exception as exc:
                    raise parents_mod.LookupFailed(
                        f"no cluster credentials for lookups: {type(exc).__name__}"
                    ) from None
            return self._lookup


def _with_parent_metadata(
    req: review.AdmissionRequest,
    lookup: _LazyLookup,
    annotation_keys: frozenset[str],
    parent_rules: set[tuple[str, str, str]],
) -> review.AdmissionRequest:
    # Only the configured kinds: anyone who can reach the port could otherwise make the
    # webhook read (and reveal the labels of) any object its RBAC happens to allow.
    if (req.resource_group, req.resource, req.sub_resource) not in parent_rules:
        raise parents_mod.LookupFailed(f"{req.ref}: not a configured parent kind")
    parent = lookup.get().metadata(
        req.resource_group, req.resource_version, req.resource, req.namespace, req.name
    )
    if parent is None:
        # No such object: nothing managed is touched (the API server answers 404 itself).
        empty = review.ObjectMeta(labels={}, annotations={})
        return dataclasses.replace(req, object=empty, old_object=empty)
    meta = review.ObjectMeta(
        labels=dict(parent.labels),
        annotations={k: v for k, v in parent.annotations.items() if k in annotation_keys},
        terminating=parent.terminating,
    )
    return dataclasses.replace(req, object=meta, old_object=meta)


def _namespace_terminating(req: review.AdmissionRequest, lookup: _LazyLookup) -> bool:
    """Whether the request's namespace is being deleted (asked only for the controllers whose
    allowance depends on it, so other requests never wait on, or fail with, the lookup)."""
    if req.resource_group == "" and req.resource == "namespaces":
        stored = req.old_object
        return stored is not None and stored.terminating
    if not req.namespace:
        return False
    namespace = lookup.get().metadata("", "v1", "namespaces", "", req.namespace)
    return namespace is not None and namespace.terminating


def _undecided(
    metrics: metrics_mod.Metrics,
    req: review.AdmissionRequest,
    exc: policy.EngineError | parents_mod.LookupFailed,
    fail_open: bool,
) -> decision_mod.Decision:
    kind = exc.kind if isinstance(exc, policy.EngineError) else "parent-lookup"
    metrics.engine_errors.labels(kind).inc()
    log.error("%s %s: %s", req.uid, req.ref, exc)
    if fail_open:
        return decision_mod.Decision(
            allowed=True,
            reason="engine-unavailable",
            mode="fail-open",
            warnings=("GitWarden: policy engine unavailable; allowed without a check (fail-open)",),
            audit={"engine-unavailable": str(exc)},
        )
    message = UNAVAILABLE if kind != "parent-lookup" else LOOKUP_FAILED
    return decision_mod.Decision(
        allowed=False, reason="engine-unavailable", mode="fail-closed", message=message
    )
