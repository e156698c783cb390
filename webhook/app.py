"""The Flask application: HTTP routes of the webhook and nothing else.

Owns request handling, which reads top to bottom as early exits: no client certificate where
one is required -> 403; too large or malformed (for a scale review also a parent no object
could be) -> 400 with a reason; policy engine failure -> an explicit fail-closed (or
configured fail-open, counted) answer; otherwise the policy's decision. It is the only module
that imports Flask. One log line per decision names the request (kind, namespace/name, user,
verdict), never its contents.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request

from webhook import config as config_mod
from webhook import decision as decision_mod
from webhook import facts as facts_mod
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
    if engine is None:
        engine = policy.OpaEngine(settings.opa_url, settings.decision_path, settings.opa_timeout)
    if metrics is None:
        metrics = metrics_mod.Metrics(settings.metrics_dir)
    annotation_keys = frozenset({settings.path_annotation})
    app = Flask("gitwarden-webhook")
    lookup = facts_mod.LazyLookup(settings.kubeconfig, settings.opa_timeout, parents)
    facts = facts_mod.Facts(admission, lookup, annotation_keys)

    def validate(route: facts_mod.Route) -> tuple[Response, int]:
        started = time.perf_counter()
        if settings.client_ca is not None and not _client_certified():
            return _unauthenticated(metrics)
        body = _read_body(settings.max_body_bytes)
        if body is None:
            return _bad_request(metrics, f"body is larger than {settings.max_body_bytes} bytes")
        try:
            req = review.parse(body, annotation_keys)
            if route.parent:  # before the lookup: the name becomes part of a URL on the API server
                review.check_lookup_target(req)
            if route.namespace_delete:  # likewise: the name is the namespace that is listed
                review.check_namespace_target(req)
        except review.MalformedReview as exc:
            return _bad_request(metrics, str(exc))
        try:
            req, found = facts.gather(req, route)
            decision = engine.decide(review.policy_input(req, **found))
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
        # Encoded here, once, compactly: Flask's JSON provider (sorted keys, its own encoder
        # hooks) costs more than the whole answer is worth on the hot path.
        answer = json.dumps(review.response(req.uid, decision), separators=(",", ":"))
        return Response(answer, mimetype="application/json"), 200

    @app.post("/validate")
    def validate_scoped() -> tuple[Response, int]:
        return validate(facts_mod.Route())

    @app.post("/validate/parent")
    @app.post("/validate/scale")  # the path of earlier registrations
    def validate_parent() -> tuple[Response, int]:
        # Scale, Eviction, Binding, TokenRequest and CONNECT requests carry no labels of the
        # object they act on; their webhook has no objectSelector and is decided on the
        # parent's metadata, for the configured parent kinds only.
        return validate(facts_mod.Route(parent=True))

    @app.post("/validate/namespace-delete")
    def validate_namespace_delete() -> tuple[Response, int]:
        # Deleting a namespace deletes what is in it: the webhook looks for managed objects.
        return validate(facts_mod.Route(namespace_delete=True))

    @app.post("/validate/crd-delete")
    def validate_crd_delete() -> tuple[Response, int]:
        # Deleting a CRD deletes its custom resources: the webhook looks for managed ones.
        return validate(facts_mod.Route(crd_delete=True))

    @app.post("/validate/protected-namespace")
    def validate_protected_namespace() -> tuple[Response, int]:
        # Only the protected-namespace webhook, whose namespaceSelector the API server has
        # already applied, is configured with this path.
        return validate(facts_mod.Route(namespace_protected=True))

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


def _client_certified() -> bool:
    """Whether this connection's TLS handshake verified a client certificate.

    The handshake already refused any certificate the client CA did not sign; one without a
    certificate completes it (so kubelet probes reach /healthz and /readyz) and is refused here.
    """
    sock = request.environ.get("gunicorn.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    return bool(getpeercert is not None and getpeercert())


def _unauthenticated(metrics: metrics_mod.Metrics) -> tuple[Response, int]:
    # Before the body is read: a client that is not the API server learns nothing.
    metrics.unauthenticated.inc()
    log.warning("refused a review from %s: no client certificate", request.remote_addr)
    return jsonify({"error": "a client certificate from the configured client CA is required"}), 403


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
        # Each of these is a change nobody checked: counted and logged apart from the error,
        # so an engine pushed past its timeout by load shows up as allows, not only as errors.
        metrics.fail_open_allows.inc()
        log.warning(
            "%s %s by %s: allowed WITHOUT a policy decision (fail-open)",
            req.uid,
            req.ref,
            req.username,
        )
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
