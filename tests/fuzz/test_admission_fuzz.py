"""Fuzz the AdmissionReview edge: generated reviews through the real app and a real OPA server.

Each example is a review the API server could send, or nearly (fields missing, of the wrong
type, oversized, odd names), POSTed to the Flask app (`webhook.app`), whose policy input builder
(`webhook.review`) and fact gathering run for real and whose engine is a real `opa run --server`
with policies/admission. Only the cluster lookup of parents is our own port's fake. The oracle:
* the answer is 200 with a well-formed AdmissionReview response for the same uid, or a 400 with
  a reason; never a 5xx, never an exception out of the app;
* a human (no `system:` username, no break-glass or exempt group) never gets an allow for a
  create, update or delete of an object that carries the managed label, through the object or
  any subresource, nor for a create on the protected-namespace path;
* an allow given to a human in a warn- or audit-mode namespace says so (warning or audit).
Counts: tests/fuzz/budget.py (`GITWARDEN_FUZZ=long` for the 100,000-review profile).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import budget
from tests.harness.services import OpaServer
from tests.webhook.fakes import FakeParents
from webhook import app as app_mod
from webhook import config as config_mod
from webhook import metrics as metrics_mod
from webhook import policy
from webhook.settings import WebhookSettings

BREAK_GLASS = "gitwarden:break-glass"
EXEMPT_GROUP = "platform:exempt"
CONFIG = config_mod.AdmissionConfig(
    repository_url="https://git.example.com/platform/cluster.git",
    exempt_groups=(EXEMPT_GROUP,),
    break_glass_groups=(BREAK_GLASS,),
    namespace_modes={"team-warn": "warn", "team-audit": "audit"},
)
MANAGED_KEY, MANAGED_VALUE = CONFIG.managed_label.key, CONFIG.managed_label.value
CHANGES = ("CREATE", "UPDATE", "DELETE")

ROUTES = ("/validate", "/validate/protected-namespace", "/validate/parent")


@pytest.fixture(scope="module", autouse=True)
def quiet_webhook_logs() -> Iterator[None]:
    """One log line per decision is the app's job, not under test here; pytest would keep each
    of them (100,000 in the long profile) in memory."""
    logger = logging.getLogger("gitwarden.webhook")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    server = OpaServer(
        tmp_path_factory.mktemp("fuzz-opa"), {"gitwarden": {"admission": CONFIG.to_opa_data()}}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _client(opa: OpaServer, parent_labels: dict[str, str]) -> FlaskClient:
    app = app_mod.create_app(
        WebhookSettings(),
        engine=policy.OpaEngine(opa.url, "admission/decision", 5.0),
        metrics=metrics_mod.Metrics(),
        parents=FakeParents(labels=parent_labels),
        admission=CONFIG,
    )
    return app.test_client()


@pytest.fixture(scope="module")
def client(opa: OpaServer) -> FlaskClient:
    """The app; a parent lookup finds an unmanaged object."""
    return _client(opa, {"app": "web"})


@pytest.fixture(scope="module")
def managed_parent_client(opa: OpaServer) -> FlaskClient:
    """The app; every parent the lookup is asked for carries the managed label."""
    return _client(opa, {MANAGED_KEY: MANAGED_VALUE})


# ------------------------------------------------------------------------------ strategies

names = st.one_of(
    st.sampled_from(["web", "db", "default", "kube-root-ca.crt", "a" * 253, "x?watch=1", ""]),
    st.text(max_size=40),
)
namespaces = st.sampled_from(["team-a", "team-warn", "team-audit", "gitwarden", "kube-system", ""])
labels = st.one_of(
    # The managed label exactly, often: that is where a wrong allow would hurt.
    st.just({MANAGED_KEY: MANAGED_VALUE, "app": "web"}),
    st.dictionaries(
        st.sampled_from([MANAGED_KEY, "app", "gitwarden.dev/protected", "Gitwarden.dev/managed"]),
        st.sampled_from([MANAGED_VALUE, "True", "false", "", "web"]),
        max_size=3,
    ),
)
humans = st.one_of(
    st.sampled_from(["alice", "bob@example.com", "System:serviceaccount:gitwarden:reconciler"]),
    st.text(min_size=1, max_size=20).filter(lambda u: not u.startswith("system:")),
)
any_users = st.one_of(
    humans,
    st.sampled_from(
        [
            "system:serviceaccount:gitwarden:reconciler",
            "system:serviceaccount:kube-system:deployment-controller",
            "system:serviceaccount:kube-system:generic-garbage-collector",
            "system:kube-controller-manager",
            "system:node:n1",
            "system:anonymous",
        ]
    ),
)
groups = st.lists(
    st.sampled_from(
        [
            "system:authenticated",
            "system:masters",
            "system:nodes",
            "team-a",
            BREAK_GLASS,
            EXEMPT_GROUP,
        ]
    ),
    max_size=3,
)
RESOURCES = [
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "secrets", "Secret"),
    ("", "v1", "pods", "Pod"),
    ("", "v1", "namespaces", "Namespace"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("apps", "v1", "deployments", "Deployment"),
    ("apps", "v1", "replicasets", "ReplicaSet"),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole"),
    ("e2e.gitwarden.dev", "v1", "widgets", "Widget"),
]
subresources = st.sampled_from(
    ["", "", "", "status", "scale", "eviction", "token", "exec", "finalize"]
)
owner_refs = st.lists(
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["apps/v1", "v1"]),
            "kind": st.sampled_from(["ReplicaSet", "Deployment", "ConfigMap"]),
            "name": st.sampled_from(["web", "web-5d8f"]),
            "uid": st.just("u-1"),
            "controller": st.booleans(),
        }
    ),
    max_size=2,
)


annotation_maps = st.dictionaries(
    st.sampled_from(["gitwarden.dev/source-path", "a", "b"]), st.text(max_size=8), max_size=2
)
data = st.dictionaries(st.sampled_from(["k", "v"]), st.text(max_size=4), max_size=2)
optional_meta: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "annotations": annotation_maps,
        "ownerReferences": owner_refs,
        "deletionTimestamp": st.just("2026-01-01T00:00:00Z"),
        "finalizers": st.just(["x"]),
    },
)
pod_specs = st.none() | st.fixed_dictionaries(
    {"serviceAccountName": st.sampled_from(["reconciler", "default"])}
)


@st.composite
def objects(draw: st.DrawFn, kind: str, api_version: str, name: str, ns: str) -> Any:
    # Strategies are built once at import: building them per draw costs more than the request.
    meta: dict[str, Any] = {"name": name, "labels": draw(labels), **draw(optional_meta)}
    if ns:
        meta["namespace"] = ns
    body: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    body["data"] = draw(data)
    spec = draw(pod_specs) if kind == "Pod" else None
    if spec is not None:
        body["spec"] = spec
    return body


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def admission_reviews(draw: st.DrawFn) -> dict[str, Any]:
    """A review, now and then with one field removed or replaced by junk."""
    group, version, resource, kind = draw(st.sampled_from(RESOURCES))
    api_version = f"{group}/{version}" if group else version
    operation = draw(st.sampled_from([*CHANGES, "CONNECT"]))
    name, ns = draw(names), draw(namespaces)
    new = draw(objects(kind, api_version, name, ns))
    old = draw(objects(kind, api_version, name, ns))
    if operation == "UPDATE" and draw(st.booleans()):
        old = json.loads(json.dumps(new))  # an update that changes little or nothing
        old["metadata"]["labels"] = draw(labels)
    user: dict[str, Any] = {"username": draw(any_users), "groups": draw(groups)}
    if draw(st.integers(0, 5)) == 0:
        user["extra"] = {"authentication.kubernetes.io/pod-name": [draw(names)]}
    request: dict[str, Any] = {
        "uid": draw(st.uuids()).hex,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "subResource": draw(subresources),
        "name": name,
        "namespace": ns,
        "operation": operation,
        "userInfo": user,
        "object": None if operation == "DELETE" else new,
        "oldObject": old if operation in ("UPDATE", "DELETE") else None,
        "dryRun": draw(st.booleans()),
    }
    if draw(st.integers(0, 3)) == 0:
        field = draw(st.sampled_from(sorted(request)))
        if draw(st.booleans()):
            del request[field]
        else:
            request[field] = draw(json_junk)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


# ------------------------------------------------------------------------------- oracle


def _labels_of(value: Any) -> dict[str, Any]:
    meta = value.get("metadata") if isinstance(value, dict) else None
    found = meta.get("labels") if isinstance(meta, dict) else None
    return found if isinstance(found, dict) else {}


def _is_human(request: dict[str, Any]) -> bool:
    user = request.get("userInfo")
    if not isinstance(user, dict) or not isinstance(user.get("username"), str):
        return False
    in_groups = user.get("groups") if isinstance(user.get("groups"), list) else []
    return not user["username"].startswith("system:") and not (
        {BREAK_GLASS, EXEMPT_GROUP} & {g for g in in_groups if isinstance(g, str)}
    )


def must_deny(request: dict[str, Any], route: str, parent_managed: bool) -> bool:
    """Whether the trust model forbids allowing this request (the cases the oracle knows)."""
    if not _is_human(request) or request.get("operation") not in CHANGES:
        return False
    if request.get("namespace") in CONFIG.namespace_modes:
        return False  # warn/audit namespaces allow with a warning (checked separately)
    managed = any(
        _labels_of(request.get(key)).get(MANAGED_KEY) == MANAGED_VALUE
        for key in ("object", "oldObject")
    )
    if route == "/validate":
        return managed
    if route == "/validate/protected-namespace":
        return request.get("operation") == "CREATE" or managed
    return parent_managed  # the parent route decides on the parent's labels


def check(client: FlaskClient, review: dict[str, Any], route: str, parent_managed: bool) -> None:
    body = json.dumps(review).encode()
    resp = client.post(route, data=body, content_type="application/json")
    assert resp.status_code in (200, 400), (resp.status_code, resp.get_data(as_text=True)[:300])
    answer = resp.get_json()
    if resp.status_code == 400:
        assert answer["reason"]
        return
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    request = review["request"]
    denied = must_deny(request, route, parent_managed)
    # Shown by --hypothesis-show-statistics: how many examples the oracle really judged.
    hypothesis.event("human change the oracle judged" if denied else "other review")
    if denied:
        assert response["allowed"] is False, (route, request)
        assert response["status"]["code"] == 403
    if (
        response["allowed"]
        and _is_human(request)
        and request.get("namespace") in CONFIG.namespace_modes
        and request.get("operation") in CHANGES
        and any(
            _labels_of(request.get(k)).get(MANAGED_KEY) == MANAGED_VALUE
            for k in ("object", "oldObject")
        )
        and route == "/validate"
    ):
        said = response.get("warnings") or response.get("auditAnnotations")
        assert said, ("an allowed human change in a warn/audit namespace must say so", request)


@budget.examples("admission")
@given(review=admission_reviews(), route=st.sampled_from(ROUTES[:2]))
def test_generated_reviews_never_fail_open_never_5xx(
    client: FlaskClient, review: dict[str, Any], route: str
) -> None:
    """Object and protected-namespace routes: 200 or 400, and no human change gets through."""
    check(client, review, route, parent_managed=False)


@budget.examples("admission_parent")
@given(review=admission_reviews())
def test_generated_subresource_reviews_of_a_managed_parent_are_denied_to_humans(
    managed_parent_client: FlaskClient, review: dict[str, Any]
) -> None:
    """The parent route (scale, eviction, token, exec, ...) with a managed parent: never allowed."""
    check(managed_parent_client, review, "/validate/parent", parent_managed=True)
