"""The Flask app with a fake engine: routing, 400s, fail-closed/open, metrics, logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhook import reviews
from tests.webhook.fakes import FakeEngine, FakeParents
from webhook import app as app_mod
from webhook import config as config_mod
from webhook import decision, policy
from webhook import metrics as metrics_mod
from webhook import parents as parents_mod
from webhook.settings import WebhookSettings

GOLDEN = reviews.golden()
SECRET_CASE = GOLDEN["cases"]["user_update_secret_denied"]["input"]


def client_for(
    engine: FakeEngine, parents: FakeParents | None = None, **overrides: Any
) -> tuple[FlaskClient, metrics_mod.Metrics]:
    metrics = metrics_mod.Metrics()
    app = app_mod.create_app(
        WebhookSettings(**overrides), engine=engine, metrics=metrics, parents=parents
    )
    return app.test_client(), metrics


def post(client: FlaskClient, body: bytes, path: str = "/validate") -> Any:
    return client.post(path, data=body, content_type="application/json")


def test_denial_is_answered_with_the_policy_message_and_the_uid() -> None:
    """A deny from the engine becomes allowed=false, code 403, the message, the same uid."""
    engine = FakeEngine(decision.Decision(False, "not-gitops", message="edit it in git"))
    client, _ = client_for(engine)
    resp = post(client, reviews.body(reviews.review_from_input(SECRET_CASE, uid="uid-7")))
    assert resp.status_code == 200
    answer = resp.get_json()["response"]
    assert answer["uid"] == "uid-7"
    assert answer["allowed"] is False
    assert answer["status"]["message"] == "edit it in git"
    assert engine.inputs[0]["namespaceProtected"] is False


def test_protected_namespace_path_tells_the_policy() -> None:
    """The protected-namespace path sets namespaceProtected in the policy input."""
    engine = FakeEngine(decision.Decision(True, "gitops-identity"))
    client, _ = client_for(engine)
    resp = post(
        client,
        reviews.body(reviews.review_from_input(SECRET_CASE)),
        "/validate/protected-namespace",
    )
    assert resp.get_json()["response"]["allowed"] is True
    assert engine.inputs[0]["namespaceProtected"] is True


@pytest.mark.parametrize(
    ("fail_open", "allowed"), [(False, False), (True, True)], ids=["closed", "open"]
)
def test_engine_failure_fails_closed_by_default_and_open_when_configured(
    fail_open: bool, allowed: bool
) -> None:
    """An unavailable engine denies with a clear message, or allows with a warning if fail-open."""
    engine = FakeEngine(error=policy.EngineError("unavailable", "cannot connect"))
    client, metrics = client_for(engine, fail_open=fail_open)
    answer = post(client, reviews.body(reviews.review_from_input(SECRET_CASE))).get_json()
    response = answer["response"]
    assert response["allowed"] is allowed
    if allowed:
        assert "policy engine unavailable" in response["warnings"][0]
        assert "engine-unavailable" in response["auditAnnotations"]
    else:
        assert "policy engine unavailable" in response["status"]["message"]
    exposition = metrics.exposition().decode()
    assert 'gitwarden_webhook_policy_engine_errors_total{kind="unavailable"} 1.0' in exposition


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not JSON"),
        (b"null", "not a JSON object"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1"}).encode(), "apiVersion"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}).encode(), "kind"),
    ],
    ids=["empty", "null", "wrong-version", "wrong-kind"],
)
def test_malformed_bodies_get_400_and_never_reach_the_engine(body: bytes, reason: str) -> None:
    """Malformed bodies are a 400 with a reason; the engine is never asked."""
    engine = FakeEngine(decision.Decision(True, "x"))
    client, metrics = client_for(engine)
    resp = post(client, body)
    assert resp.status_code == 400
    assert reason in resp.get_json()["reason"]
    assert engine.inputs == []
    assert "gitwarden_webhook_bad_requests_total 1.0" in metrics.exposition().decode()


def test_oversized_body_gets_400() -> None:
    """A body over the limit is refused before it is parsed."""
    engine = FakeEngine(decision.Decision(True, "x"))
    client, _ = client_for(engine, max_body_bytes=4096)
    big = reviews.review_from_input(SECRET_CASE)
    big["request"]["object"]["data"]["blob"] = "A" * 10_000
    resp = post(client, reviews.body(big))
    assert resp.status_code == 400
    assert "larger than 4096 bytes" in resp.get_json()["reason"]
    assert engine.inputs == []


def test_readyz_follows_the_engine() -> None:
    """/readyz is 200 only while the engine is ready; /healthz is always 200."""
    engine = FakeEngine()
    client, _ = client_for(engine)
    assert client.get("/readyz").status_code == 200
    engine.is_ready = False
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_wrong_method_and_path_are_client_errors() -> None:
    """GET /validate is 405 and an unknown path 404, not 500."""
    client, _ = client_for(FakeEngine())
    assert client.get("/validate").status_code == 405
    assert client.post("/nope", data=b"{}").status_code == 404


def test_decision_log_names_the_request_but_not_its_contents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The decision log line has kind, name and user; never Secret data."""
    client, _ = client_for(FakeEngine(decision.Decision(False, "not-gitops", message="m")))
    with caplog.at_level(logging.DEBUG):
        post(client, reviews.body(reviews.review_from_input(SECRET_CASE)))
    text = caplog.text
    assert "Secret team-a/web by alice: denied (not-gitops, enforce)" in text
    assert "c2VjcmV0LXZhbHVl" not in text
    assert "secret-value" not in text


def test_decision_metrics_count_by_result_and_mode() -> None:
    """Each decision is counted by result, mode and reason, and its latency observed."""
    client, metrics = client_for(FakeEngine(decision.Decision(True, "break-glass", mode="enforce")))
    for _ in range(3):
        post(client, reviews.body(reviews.review_from_input(SECRET_CASE)))
    text = metrics.exposition().decode()
    line = (
        'gitwarden_webhook_decisions_total{mode="enforce",reason="break-glass",result="allow"} 3.0'
    )
    assert line in text
    assert "gitwarden_webhook_request_duration_seconds_count 3.0" in text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _mutated_reviews() -> st.SearchStrategy[bytes]:
    """Valid reviews with one field replaced by a random JSON value."""
    base = reviews.review_from_input(SECRET_CASE)
    fields = sorted(base["request"])

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        review = json.loads(json.dumps(base))
        review["request"][draw(st.sampled_from(fields))] = draw(json_values)
        return json.dumps(review).encode()

    return build()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=256)
    | json_values.map(lambda v: json.dumps(v).encode())
    | _mutated_reviews()
)
def test_random_bodies_are_400_or_a_real_decision_never_500_or_a_silent_allow(body: bytes) -> None:
    """Whatever arrives, the answer is a 400 with a reason or the engine's own decision."""
    engine = FakeEngine(decision.Decision(False, "not-gitops", message="m"))
    client, _ = client_for(engine)
    resp = post(client, body)
    assert resp.status_code in (200, 400)
    if resp.status_code == 400:
        assert resp.get_json()["reason"]
        assert engine.inputs == []
    else:
        assert resp.get_json()["response"]["allowed"] is False
        assert len(engine.inputs) == 1


SCALE_CASE = GOLDEN["cases"]["scale_by_human_denied"]["input"]


def test_scale_is_decided_on_the_parents_labels() -> None:
    """/validate/scale replaces the Scale's (empty) metadata with the parent's before deciding."""
    engine = FakeEngine(decision.Decision(False, "not-gitops", message="m"))
    parents = FakeParents(
        labels={"gitwarden.dev/managed": "true"},
        annotations={"gitwarden.dev/source-path": "apps/web.yaml", "other": "dropped"},
    )
    client, _ = client_for(engine, parents)
    scale_review = reviews.review_from_input(SCALE_CASE)
    for key in ("object", "oldObject"):
        scale_review["request"][key]["metadata"]["labels"] = {}
    resp = post(client, reviews.body(scale_review), "/validate/scale")
    assert resp.get_json()["response"]["allowed"] is False
    assert parents.asked == [("apps", "v1", "deployments", "team-a", "web")]
    sent = engine.inputs[0]
    assert sent["object"]["labels"] == {"gitwarden.dev/managed": "true"}
    assert sent["oldObject"]["annotations"] == {"gitwarden.dev/source-path": "apps/web.yaml"}


def test_scale_lookup_failure_fails_closed_with_its_own_message() -> None:
    """A parent that cannot be read is a denial naming the cause; the engine is not asked."""
    engine = FakeEngine(decision.Decision(True, "x"))
    client, metrics = client_for(engine, FakeParents(fail=True))
    resp = post(client, reviews.body(reviews.review_from_input(SCALE_CASE)), "/validate/scale")
    response = resp.get_json()["response"]
    assert response["allowed"] is False
    assert (
        "cannot read the object (or namespace) this request acts on"
        in (response["status"]["message"])
    )
    assert engine.inputs == []
    assert 'kind="parent-lookup"' in metrics.exposition().decode()


def test_parent_path_reads_only_configured_parent_kinds() -> None:
    """A subresource that is not configured is refused without a lookup (no lookup proxy)."""
    engine = FakeEngine(decision.Decision(True, "x"))
    parents = FakeParents()
    client, _ = client_for(engine, parents)
    review = reviews.review_from_input(SCALE_CASE)
    review["request"]["resource"] = {"group": "", "version": "v1", "resource": "secrets"}
    response = post(client, reviews.body(review), "/validate/parent").get_json()["response"]
    assert response["allowed"] is False
    assert parents.asked == []
    assert engine.inputs == []


@pytest.mark.parametrize("case", ["eviction_of_managed_pod_denied", "exec_into_managed_pod_denied"])
def test_pod_subresources_are_decided_on_the_pods_labels(case: str) -> None:
    """Eviction and exec carry no labels: the pod's metadata is what the policy sees."""
    engine = FakeEngine(decision.Decision(False, "not-gitops", message="m"))
    pod = parents_mod.ParentMeta(labels={"gitwarden.dev/managed": "true"}, annotations={})
    parents = FakeParents(objects={("pods", "team-a", "web"): pod})
    client, _ = client_for(engine, parents)
    review = reviews.review_from_input(GOLDEN["cases"][case]["input"])
    review["request"]["object"]["metadata"]["labels"] = {}
    review["request"]["oldObject"] = None
    post(client, reviews.body(review), "/validate/parent")
    assert parents.asked == [("", "v1", "pods", "team-a", "web")]
    assert engine.inputs[0]["object"]["labels"] == {"gitwarden.dev/managed": "true"}
    assert engine.inputs[0]["oldObject"]["labels"] == {"gitwarden.dev/managed": "true"}


def test_missing_parent_is_out_of_scope_not_a_failure() -> None:
    """A parent that does not exist is sent with no labels (allowed), never failed closed."""
    engine = FakeEngine(decision.Decision(True, "out-of-scope"))
    parents = FakeParents(objects={("deployments", "team-a", "web"): None})
    client, _ = client_for(engine, parents)
    resp = post(client, reviews.body(reviews.review_from_input(SCALE_CASE)), "/validate/parent")
    assert resp.get_json()["response"]["allowed"] is True
    assert engine.inputs[0]["object"]["labels"] == {}


NS_DELETE = GOLDEN["cases"]["namespace_controller_delete_allowed"]["input"]


@pytest.mark.parametrize("terminating", [True, False])
def test_namespace_controller_deletes_carry_the_namespace_phase(terminating: bool) -> None:
    """For the namespace controller the webhook reads the namespace's deletionTimestamp."""
    engine = FakeEngine(decision.Decision(True, "x"))
    ns = parents_mod.ParentMeta(labels={}, annotations={}, terminating=terminating)
    parents = FakeParents(objects={("namespaces", "", "team-a"): ns})
    client, _ = client_for(engine, parents)
    post(client, reviews.body(reviews.review_from_input(NS_DELETE)))
    assert parents.asked == [("", "v1", "namespaces", "", "team-a")]
    assert engine.inputs[0]["namespaceTerminating"] is terminating


def test_other_identities_never_wait_on_a_namespace_lookup() -> None:
    """A person's delete is decided without any lookup, so a lookup can never fail it closed."""
    engine = FakeEngine(decision.Decision(False, "not-gitops", message="m"))
    parents = FakeParents(fail=True)
    client, _ = client_for(engine, parents)
    case = GOLDEN["cases"]["user_delete_configmap_denied"]["input"]
    post(client, reviews.body(reviews.review_from_input(case)))
    assert parents.asked == []
    assert engine.inputs[0]["namespaceTerminating"] is False


NS_CASE = GOLDEN["cases"]["empty_namespace_delete_allowed"]["input"]


@pytest.mark.parametrize(("holding", "expected"), [(frozenset(), False), ({"services"}, True)])
def test_namespace_delete_lists_the_configured_kinds_for_a_managed_object(
    holding: frozenset[str], expected: bool
) -> None:
    """One labelled list per configured kind, in the namespace being deleted."""
    engine = FakeEngine(decision.Decision(True, "x"))
    parents = FakeParents(holding=frozenset(holding))
    client, _ = client_for(engine, parents)
    post(client, reviews.body(reviews.review_from_input(NS_CASE)), "/validate/namespace-delete")
    assert engine.inputs[0]["namespaceHoldsManaged"] is expected
    assert ("configmaps", "prod", "gitwarden.dev/managed=true") in parents.listed
    assert parents.asked == []


@pytest.mark.parametrize("name", ["", "Prod", "prod.x"])
def test_namespace_delete_without_a_namespace_name_lists_nothing(name: str) -> None:
    """A namespace delete always names one namespace (a DNS-1123 label).

    Before: a review posted to the port with no name (request.name and oldObject's empty) made
    the webhook list every configured kind across all namespaces, an oracle for whether any
    managed object exists anywhere. Now it is a 400 before any lookup.
    """
    engine = FakeEngine(decision.Decision(True, "x"))
    parents = FakeParents(holding=frozenset({"configmaps"}))
    client, _ = client_for(engine, parents)
    built = reviews.review_from_input(NS_CASE)
    built["request"]["name"] = name
    built["request"]["oldObject"]["metadata"]["name"] = name
    resp = post(client, reviews.body(built), "/validate/namespace-delete")
    assert resp.status_code == 400
    assert "not a valid namespace name" in resp.get_json()["reason"]
    assert parents.listed == []
    assert engine.inputs == []


def test_namespace_delete_lookup_failure_fails_closed() -> None:
    """A list that fails is a denial, like any lookup."""
    engine = FakeEngine(decision.Decision(True, "x"))
    client, _ = client_for(engine, FakeParents(fail=True))
    resp = post(
        client, reviews.body(reviews.review_from_input(NS_CASE)), "/validate/namespace-delete"
    )
    assert resp.get_json()["response"]["allowed"] is False
    assert engine.inputs == []


GITOPS_CASE = GOLDEN["cases"]["gitops_update_deployment"]["input"]
LIVE = config_mod.AdmissionConfig(
    require_pod_bound_token=True,
    pod_name_prefixes=("gitwarden-reconciler-",),
    verify_pod_live=True,
    pod_labels={"app.kubernetes.io/name": "gitwarden-reconciler"},
)
RECONCILER_LABELS = {"app.kubernetes.io/name": "gitwarden-reconciler"}


@pytest.mark.parametrize(
    ("uid", "labels", "live"),
    [
        ("uid-live", RECONCILER_LABELS, True),
        ("uid-other", RECONCILER_LABELS, False),
        ("", RECONCILER_LABELS, False),
        ("uid-live", {"app.kubernetes.io/name": "debug"}, False),
    ],
    ids=["live", "other-uid", "no-uid", "other-labels"],
)
def test_pod_bound_gitops_requests_are_checked_against_the_live_pod(
    uid: str, labels: dict[str, str], live: bool
) -> None:
    """With verify_pod_live the token's pod must exist in our namespace with its uid and labels."""
    engine = FakeEngine(decision.Decision(True, "gitops-identity"))
    pod = parents_mod.ParentMeta(labels=labels, annotations={}, uid="uid-live")
    parents = FakeParents(objects={("pods", "gitwarden", "gitwarden-reconciler-0"): pod})
    app = app_mod.create_app(
        WebhookSettings(),
        engine=engine,
        metrics=metrics_mod.Metrics(),
        parents=parents,
        admission=LIVE,
    )
    review = reviews.review_from_input(GITOPS_CASE)
    extra = {"authentication.kubernetes.io/pod-name": ["gitwarden-reconciler-0"]}
    if uid:
        extra["authentication.kubernetes.io/pod-uid"] = [uid]
    review["request"]["userInfo"]["extra"] = extra
    post(app.test_client(), reviews.body(review))
    assert engine.inputs[0]["userInfo"]["podLive"] is live
    assert parents.asked == [("", "v1", "pods", "gitwarden", "gitwarden-reconciler-0")]


CRD_CASE = GOLDEN["cases"]["crd_with_managed_instances_delete_denied"]["input"]


def test_crd_delete_lists_the_custom_resources_of_guarded_groups_only() -> None:
    """The CRD's served group/version/plural are listed for one managed object."""
    engine = FakeEngine(decision.Decision(True, "x"))
    parents = FakeParents(holding=frozenset({"widgets"}))
    guarded = config_mod.AdmissionConfig(guarded_crd_groups=("example.com",))
    app = app_mod.create_app(
        WebhookSettings(),
        engine=engine,
        metrics=metrics_mod.Metrics(),
        parents=parents,
        admission=guarded,
    )
    review = reviews.review_from_input(CRD_CASE)
    review["request"]["oldObject"]["spec"] = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True}],
    }
    post(app.test_client(), reviews.body(review), "/validate/crd-delete")
    assert parents.listed == [("widgets", "", "gitwarden.dev/managed=true")]
    assert engine.inputs[0]["crdHoldsManaged"] is True
    other = config_mod.AdmissionConfig(guarded_crd_groups=("example.org",))
    engine2, parents2 = FakeEngine(decision.Decision(True, "x")), FakeParents()
    app2 = app_mod.create_app(
        WebhookSettings(),
        engine=engine2,
        metrics=metrics_mod.Metrics(),
        parents=parents2,
        admission=other,
    )
    post(app2.test_client(), reviews.body(review), "/validate/crd-delete")
    assert parents2.listed == []
    assert engine2.inputs[0]["crdHoldsManaged"] is False


def _lookup_counts(metrics: metrics_mod.Metrics) -> dict[tuple[str, str], float]:
    """Observations of the lookup histogram by (read, outcome), from the exposition."""
    counts: dict[tuple[str, str], float] = {}
    prefix = "gitwarden_webhook_lookup_duration_seconds_count{"
    for line in metrics.exposition().decode().splitlines():
        if line.startswith(prefix):
            labels = dict(
                part.split("=", 1) for part in line[len(prefix) : line.index("}")].split(",")
            )
            key = (labels["read"].strip('"'), labels["outcome"].strip('"'))
            counts[key] = float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.parametrize(
    ("fake", "path", "case", "expected"),
    [
        (
            {"labels": {"gitwarden.dev/managed": "true"}},
            "/validate/parent",
            SCALE_CASE,
            ("object", "found"),
        ),
        (
            {"objects": {("deployments", "team-a", "web"): None}},
            "/validate/parent",
            SCALE_CASE,
            ("object", "absent"),
        ),
        ({"fail": True}, "/validate/parent", SCALE_CASE, ("object", "failed")),
        (
            {"holding": frozenset({"configmaps"})},
            "/validate/namespace-delete",
            NS_CASE,
            ("list", "found"),
        ),
        ({}, "/validate/namespace-delete", NS_CASE, ("list", "absent")),
    ],
)
def test_every_lookup_is_timed_on_metrics_by_read_and_outcome(
    fake: dict[str, Any], path: str, case: dict[str, Any], expected: tuple[str, str]
) -> None:
    """/metrics says how many reads of the API server decisions needed and how they ended."""
    parents = FakeParents(**fake)  # a fresh one per run: it records what it was asked
    client, metrics = client_for(FakeEngine(decision.Decision(True, "x")), parents)
    assert set(_lookup_counts(metrics).values()) == {0.0}  # every series there from the start
    post(client, reviews.body(reviews.review_from_input(case)), path)
    reads = len(parents.asked) + len(parents.listed)
    assert reads >= 1
    counts = _lookup_counts(metrics)
    assert len(counts) == 6
    assert counts[expected] == reads
    assert sum(counts.values()) == reads
    # A decision that needs no lookup adds none.
    post(client, reviews.body(reviews.review_from_input(SECRET_CASE)))
    assert sum(_lookup_counts(metrics).values()) == reads
