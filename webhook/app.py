"""The Flask application: HTTP routes of the webhook and nothing else.

Owns request handling, which reads top to bottom as early exits: no client certificate where
one is required -> 403; too large or malformed (for a scale review also a parent no object
could be) -> 400 with a reason; policy engine failure -> an explicit fail-closed (or
configured fail-open, counted) answer; otherwise the policy's decision. It is the only module
that imports Flask. POSTs to the review paths are answered by a thin WSGI layer in front of
Flask (`ReviewRoutes`), which costs a request about 1 us instead of Flask's ~70 us of request
context, URL matching and response objects; everything else (probes, /metrics, wrong methods
and paths) is Flask's. With the decision cache on, `_Recall` (reached through `recall_of`)
takes a review up on the serving worker's event loop without ever waiting there: it answers a
hit (after the reads its facts need, each made on the loop as a `_Lookup`) with the same
answer, counters and log line, and hands a miss to a thread with what it parsed and read.
One log line per decision names the request (kind, namespace/name, user, verdict), never its
contents.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson
from flask import Flask, Response, jsonify, request
from werkzeug import wsgi

from webhook import config as config_mod
from webhook import decision as decision_mod
from webhook import decisioncache, policy, review
from webhook import facts as facts_mod
from webhook import metrics as metrics_mod
from webhook import parents as parents_mod
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

# The paths of create_app's review routes (the keys of its `routes`), which the serving worker
# answers without gunicorn's HTTP parser when a POST to one is well formed (webhook.worker).
REVIEW_PATHS: tuple[str, ...] = (
    "/validate",
    "/validate/parent",
    "/validate/scale",
    "/validate/namespace-delete",
    "/validate/crd-delete",
    "/validate/protected-namespace",
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
    if metrics is None:
        metrics = metrics_mod.Metrics(settings.metrics_dir)
    cache: decisioncache.CachedDecisions | None = None
    if engine is None:
        opa = policy.OpaEngine(settings.opa_url, settings.decision_path, settings.opa_timeout)
        engine = opa
        if settings.decision_cache:
            counters = {
                result: metrics.decision_cache.labels(result)
                for result in (decisioncache.HIT, decisioncache.MISS, decisioncache.UNCACHEABLE)
            }
            engine = cache = decisioncache.CachedDecisions(
                opa, settings.decision_cache, lambda result: counters[result].inc()
            )
    annotation_keys = frozenset({settings.path_annotation})
    app = Flask("gitwarden-webhook")
    timings = {
        (read, outcome): metrics.lookups.labels(read, outcome)
        for read in ("object", "list")
        for outcome in ("found", "absent", "failed")
    }
    lookup = facts_mod.LazyLookup(
        settings.kubeconfig,
        settings.opa_timeout,
        parents,
        lambda read, outcome, seconds: timings[(read, outcome)].observe(seconds),
    )
    facts = facts_mod.Facts(admission, lookup, annotation_keys)

    def validate(environ: dict[str, Any], route: facts_mod.Route) -> tuple[int, bytes]:
        carried = environ.get(CARRIED)
        if isinstance(carried, _Carried):  # parsed (and read for) by `recall` on the event loop
            return 200, decide(carried.request, route, carried.known, carried.started)
        started = time.perf_counter()
        if settings.client_ca is not None and not _client_certified(environ):
            return _unauthenticated(metrics, environ)
        body = _read_body(environ, settings.max_body_bytes)
        if body is None:
            return _bad_request(metrics, f"body is larger than {settings.max_body_bytes} bytes")
        try:
            req = _parsed(body, annotation_keys, route)
        except review.MalformedReview as exc:
            return _bad_request(metrics, str(exc))
        return 200, decide(req, route, None, started)

    def decide(
        req: review.AdmissionRequest,
        route: facts_mod.Route,
        known: facts_mod.Known | None,
        started: float,
    ) -> bytes:
        try:
            req, found = facts.gather(req, route, known)
            decision = engine.decide(review.policy_input(req, **found))
        except (policy.EngineError, parents_mod.LookupFailed) as exc:
            decision = _undecided(metrics, req, exc, settings.fail_open)
        return _answered(metrics, req, decision, started)

    # The review paths the API server is configured with (registration.py), and what each
    # says about the request.
    routes = {
        "/validate": facts_mod.Route(),
        # Scale, Eviction, Binding, TokenRequest and CONNECT requests carry no labels of the
        # object they act on; their webhook has no objectSelector and is decided on the
        # parent's metadata, for the configured parent kinds only.
        "/validate/parent": facts_mod.Route(parent=True),
        "/validate/scale": facts_mod.Route(parent=True),  # the path of earlier registrations
        # Deleting a namespace deletes what is in it: the webhook looks for managed objects.
        "/validate/namespace-delete": facts_mod.Route(namespace_delete=True),
        # Deleting a CRD deletes its custom resources: the webhook looks for managed ones.
        "/validate/crd-delete": facts_mod.Route(crd_delete=True),
        # Only the protected-namespace webhook, whose namespaceSelector the API server has
        # already applied, is configured with this path.
        "/validate/protected-namespace": facts_mod.Route(namespace_protected=True),
    }

    if cache is not None:
        app.extensions[RECALL] = _Recall(settings, routes, facts, cache, metrics)

    def flask_review() -> Response:
        # Reached only when ReviewRoutes is not in front (a caller of app.full_dispatch_request);
        # registering the paths also gives other methods their 405.
        code, body = validate(request.environ, routes[request.path])
        return Response(body, status=code, mimetype="application/json")

    for path in routes:
        app.add_url_rule(path, f"review {path}", flask_review, methods=["POST"])

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

    app.wsgi_app = ReviewRoutes(routes, validate, app.wsgi_app)  # type: ignore[method-assign]
    return app


_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    500: "500 Internal Server Error",
}
_INTERNAL_ERROR = json.dumps({"error": "internal error"}).encode()


class ReviewRoutes:
    """WSGI middleware: a POST to a review path is validated here, anything else goes to Flask.

    It answers exactly what the Flask route would (status, JSON body, Content-Type), and an
    unexpected exception as Flask's error handler does: 500 without a stack trace, the
    exception's type logged and never its text (it could quote the request).
    """

    def __init__(
        self,
        routes: Mapping[str, facts_mod.Route],
        validate: Callable[[dict[str, Any], facts_mod.Route], tuple[int, bytes]],
        fallback: _WSGIApp,
    ) -> None:
        self._routes, self._validate, self._fallback = dict(routes), validate, fallback

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        route = self._routes.get(environ.get("PATH_INFO", ""))
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self._fallback(environ, start_response)
        try:
            code, body = self._validate(environ, route)
        except Exception as exc:
            # Not log.exception: a traceback carries the exception's text, which could quote
            # the request.
            log.error(  # noqa: TRY400
                "internal error handling POST %s: %s", environ.get("PATH_INFO"), type(exc).__name__
            )
            code, body = 500, _INTERNAL_ERROR
        status, headers, body = _wsgi_answer(code, body)
        start_response(status, headers)
        return [body]


WSGIAnswer = tuple[str, list[tuple[str, str]], bytes]
"""A WSGI answer in full: status line, headers, body."""

RECALL = "gitwarden.recall"
"""The key of the app's `recall` in its Flask `extensions` (read by `recall_of`)."""


def recall_of(app: Flask) -> Callable[[str, bytes, Callable[[], bool]], Recalled] | None:
    """The app's answer without waiting (`_Recall`), if it caches decisions."""
    found = app.extensions.get(RECALL)
    return found if isinstance(found, _Recall) else None


def _wsgi_answer(code: int, body: bytes) -> WSGIAnswer:
    """What ReviewRoutes answers with `code` and `body` (and so what `recall` sends)."""
    return (
        _STATUS[code],
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        body,
    )


CARRIED = "gitwarden.carried"
"""The environ key under which the serving worker hands a thread what `recall` already did
(`_Carried`): set only from `recall`'s own answer, never from a request (a header becomes an
`HTTP_` key)."""


@dataclass(frozen=True)
class _Carried:
    """A review `recall` parsed and checked, with the reads it made; a thread decides it."""

    request: review.AdmissionRequest
    known: facts_mod.Known
    started: float


class _Recall:
    """The app's answer to a review POST without waiting (`recall_of`)."""

    def __init__(
        self,
        settings: settings_mod.WebhookSettings,
        routes: Mapping[str, facts_mod.Route],
        facts: facts_mod.Facts,
        cache: decisioncache.CachedDecisions,
        metrics: metrics_mod.Metrics,
    ) -> None:
        self._routes, self._facts, self._cache, self._metrics = dict(routes), facts, cache, metrics
        self._client_ca = settings.client_ca is not None
        self._max_body = settings.max_body_bytes
        self._fail_open = settings.fail_open
        self._keys = frozenset({settings.path_annotation})

    def __call__(self, path: str, body: bytes, certified: Callable[[], bool]) -> Recalled:
        """The answer, a read to wait for, the parsed review for a thread, or None.

        For the serving worker's event loop (`worker.TLSServing.recall`), which never waits
        here: it sends an answer as it is, advances a `_Lookup` whenever its socket is ready
        (each read is the GET a thread would make, fresh from the API server), and hands the
        rest to a request thread, which decides what was carried (OPA, for a cache miss) or,
        for None, answers as always. A hit, and a failed read, are answered, counted and
        logged exactly as `validate` answers them. None for another path, no client
        certificate where one is required, and an oversized or malformed review (the thread
        answers those 400 or 403).
        """
        started = time.perf_counter()
        route = self._routes.get(path)
        if route is None or (self._client_ca and not certified()) or len(body) > self._max_body:
            return None
        try:
            req = _parsed(body, self._keys, route)
        except review.MalformedReview:
            return None
        return self.resume(req, route, {}, started)

    def resume(
        self,
        req: review.AdmissionRequest,
        route: facts_mod.Route,
        known: facts_mod.Known,
        started: float,
    ) -> Recalled:
        """On from the reads in `known`: the next read, the answer, or the carry for a thread."""
        try:
            while isinstance(step := self._facts.next_read(req, route, known), parents_mod.Read):
                pending = self._facts.start(step)
                if pending is None:  # reads on threads only: the thread makes the rest
                    return {CARRIED: _Carried(req, known, started)}
                if not pending.over:
                    return _Lookup(self, route, _Carried(req, known, started), pending)
                known = {**known, step: _outcome(pending)}  # over at once (failed, mostly)
        except parents_mod.LookupFailed as exc:
            decision = _undecided(self._metrics, req, exc, self._fail_open)
            return _wsgi_answer(200, _answered(self._metrics, req, decision, started))
        gathered, found = step
        kept = self._cache.recall(review.policy_input(gathered, **found))
        if kept is None:  # OPA decides, on a thread; nothing is parsed or read again
            return {CARRIED: _Carried(req, known, started)}
        return _wsgi_answer(200, _answered(self._metrics, gathered, kept, started))


class _Lookup:
    """A review waiting on the event loop for one read (the worker's `Waiting`)."""

    def __init__(
        self,
        recall: _Recall,
        route: facts_mod.Route,
        so_far: _Carried,
        pending: parents_mod.Pending,
    ) -> None:
        self._recall, self._route, self._so_far, self._pending = recall, route, so_far, pending

    @property
    def sock(self) -> Any:
        return self._pending.sock

    @property
    def wants_write(self) -> bool:
        return self._pending.wants_write

    @property
    def deadline(self) -> float:
        return self._pending.deadline

    def advance(self) -> Recalled:
        """Itself while the read goes on; then what `resume` answers with its answer known."""
        if not self._pending.advance():
            return self
        return self._resumed()

    def expire(self) -> Recalled:
        """Past the read's deadline: it failed (timed out); answered as a failed read is."""
        self._pending.expire()
        return self._resumed()

    def _resumed(self) -> Recalled:
        so_far = self._so_far
        known = {**so_far.known, self._pending.read: _outcome(self._pending)}
        return self._recall.resume(so_far.request, self._route, known, so_far.started)


def _outcome(pending: parents_mod.Pending) -> parents_mod.Answered | parents_mod.LookupFailed:
    """What an ended read answered, or its failure (kept: the facts re-raise it in turn)."""
    try:
        return pending.result()
    except parents_mod.LookupFailed as exc:
        return exc


Recalled: TypeAlias = "WSGIAnswer | dict[str, Any] | _Lookup | None"
"""`recall`'s answer (the serving worker's `Recalled`): the answer to send; environ keys for
the request thread that decides it (`CARRIED`); a `_Lookup` waiting on a read; None."""


def _parsed(body: bytes, keys: frozenset[str], route: facts_mod.Route) -> review.AdmissionRequest:
    """The review in `body`, its names checked where the route looks them up."""
    req = review.parse(body, keys)
    if route.parent:  # before the lookup: the name becomes part of a URL on the API server
        review.check_lookup_target(req)
    if route.namespace_delete:  # likewise: the name is the namespace that is listed
        review.check_namespace_target(req)
    return req


def _answered(
    metrics: metrics_mod.Metrics,
    req: review.AdmissionRequest,
    decision: decision_mod.Decision,
    started: float,
) -> bytes:
    """Count and log a decision; its AdmissionReview answer."""
    metrics.decisions.labels(
        "allow" if decision.allowed else "deny", decision.mode, decision.reason
    ).inc()
    elapsed = time.perf_counter() - started
    metrics.latency.observe(elapsed)
    log.info(
        "%s %s %s by %s: %s (%s, %s) in %.1f ms%s",
        req.uid,
        req.operation.lower(),
        req.ref + (f"/{req.sub_resource}" if req.sub_resource else ""),
        req.username,
        "allowed" if decision.allowed else "denied",
        decision.reason,
        decision.mode,
        elapsed * 1000,
        ", from the decision cache" if decision.cached else "",
    )
    # Encoded here, once, compactly, as UTF-8 by orjson: Flask's JSON provider (sorted keys,
    # its own encoder hooks) costs more than the whole answer is worth on the hot path.
    return orjson.dumps(review.response(req.uid, decision))


def _client_certified(environ: dict[str, Any]) -> bool:
    """Whether this connection's TLS handshake verified a client certificate.

    The handshake already refused any certificate the client CA did not sign; one without a
    certificate completes it (so kubelet probes reach /healthz and /readyz) and is refused here.
    """
    sock = environ.get("gunicorn.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    return bool(getpeercert is not None and getpeercert())


def _error(payload: Mapping[str, str]) -> bytes:
    return json.dumps(payload).encode()


def _unauthenticated(metrics: metrics_mod.Metrics, environ: dict[str, Any]) -> tuple[int, bytes]:
    # Before the body is read: a client that is not the API server learns nothing.
    metrics.unauthenticated.inc()
    log.warning("refused a review from %s: no client certificate", environ.get("REMOTE_ADDR"))
    return 403, _error({"error": "a client certificate from the configured client CA is required"})


def _bad_request(metrics: metrics_mod.Metrics, reason: str) -> tuple[int, bytes]:
    metrics.bad_requests.inc()
    log.warning("rejected malformed AdmissionReview: %s", reason)
    return 400, _error({"error": "malformed AdmissionReview", "reason": reason})


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit`.

    The stream is werkzeug's, as Flask's `request.stream` is: gunicorn's own when it marks
    the input terminated, else limited to Content-Length. An oversized body is drained (up to
    4x the limit, in chunks, never kept) so the client can read the 400 instead of seeing its
    connection cut mid-upload.
    """
    stream = wsgi.get_input_stream(environ)
    data = stream.read(limit + 1)
    if len(data) <= limit:
        return data
    remaining = 3 * limit
    while remaining > 0 and (chunk := stream.read(min(remaining, 1 << 16))):
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
