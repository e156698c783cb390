"""The AdmissionReview wire format: parsing, the slim policy input, and the response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.webhook import reviews
from webhook import decision, review

KEYS = frozenset({"gitwarden.dev/source-path"})
GOLDEN = reviews.golden()


@pytest.mark.parametrize("name", sorted(GOLDEN["cases"]))
def test_golden_review_parses_to_the_golden_policy_input(name: str) -> None:
    """Every golden policy input is exactly what the webhook sends for the matching review."""
    case = GOLDEN["cases"][name]
    body = reviews.body(reviews.review_from_input(case["input"], uid="u-1"))
    req = review.parse(body, KEYS)
    got = review.policy_input(req, **reviews.facts(case["input"]))
    assert got == case["input"]
    assert req.uid == "u-1"


def test_only_configured_annotations_and_no_contents_reach_the_policy() -> None:
    """Secret data and unrelated annotations stay out of the policy input."""
    case = GOLDEN["cases"]["user_update_secret_denied"]["input"]
    body = reviews.body(reviews.review_from_input(case))
    sent = json.dumps(review.policy_input(review.parse(body, KEYS), namespace_protected=False))
    assert "c2VjcmV0LXZhbHVl" not in sent
    assert "unrelated.example/big" not in sent
    assert "gitwarden.dev/source-path" in sent


def test_changed_fields_ignore_server_maintained_metadata() -> None:
    """resourceVersion, managedFields and generation changes are not a user's change."""
    old = {"metadata": {"name": "a", "resourceVersion": "1", "generation": 1}, "spec": {"x": 1}}
    new = {
        "metadata": {"name": "a", "resourceVersion": "2", "generation": 2, "finalizers": []},
        "spec": {"x": 1},
        "status": {"ready": True},
    }
    body = _review(operation="UPDATE", object=new, oldObject=old)
    assert review.parse(body, KEYS).changed_fields == ("metadata.finalizers", "status")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (2**53, 2**53 + 1),
        (2**63 - 2, 2**63 - 1),
        (-(2**63), -(2**63) + 1),
        (0.1, 0.30000000000000004),
    ],
)
def test_a_change_between_numbers_a_float_would_confuse_is_still_a_change(
    before: float, after: float
) -> None:
    """64-bit integers are parsed exactly: a spec change hidden in the 54th bit is seen."""
    old = {"metadata": {"name": "a"}, "spec": {"x": before}}
    new = {"metadata": {"name": "a"}, "spec": {"x": after}}
    body = _review(operation="UPDATE", object=new, oldObject=old)
    assert review.parse(body, KEYS).changed_fields == ("spec",)


def _review(**request: Any) -> bytes:
    base: dict[str, Any] = {
        "uid": "u",
        "operation": "CREATE",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "userInfo": {"username": "alice"},
        "object": {"metadata": {"name": "a"}},
    }
    base.update(request)
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}
    ).encode()


MALFORMED = {
    "not json": (b"{", "not JSON"),
    "not utf-8": (b"\xff\xfe", "not JSON"),
    "a list": (b"[]", "not a JSON object"),
    "wrong version": (
        json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(),
        "apiVersion must be admission.k8s.io/v1",
    ),
    "wrong kind": (
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "ConfigMap"}).encode(),
        "kind must be AdmissionReview",
    ),
    "no request": (
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
        "request is missing",
    ),
    "no uid": (_review(uid=""), "uid must be a non-empty string"),
    "bad operation": (_review(operation="PATCH"), "operation must be one of"),
    "no user": (_review(userInfo=None), "userInfo is missing"),
    "no username": (_review(userInfo={"groups": []}), "username must be a non-empty string"),
    "groups not strings": (_review(userInfo={"username": "a", "groups": [1]}), "groups"),
    "create without object": (_review(object=None), "object is required for CREATE"),
    "update without old": (_review(operation="UPDATE"), "required for UPDATE"),
    "delete without old": (_review(operation="DELETE", object=None), "required for DELETE"),
    "labels not strings": (
        _review(object={"metadata": {"labels": {"a": 1}}}),
        "labels must map strings to strings",
    ),
    "object not a map": (_review(object="x"), "object must be an object or null"),
    "dryRun not bool": (_review(dryRun="yes"), "dryRun must be a boolean"),
    "extra not a map": (
        _review(userInfo={"username": "a", "extra": []}),
        "extra must be an object",
    ),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    # JSON the standard library would take but the API server never writes: refused, with why.
    "a NaN": (_review().replace(b'"alice"', b'"alice", "n": NaN'), "not strict UTF-8 JSON"),
    "Infinity": (_review().replace(b'"alice"', b'"alice", "n": -Infinity'), "not strict"),
    "a lone surrogate": (_review().replace(b'"alice"', b'"alice\\ud800"'), "not strict"),
    "past float64": (_review().replace(b'"alice"', b'"alice", "n": 1e999'), "not strict"),
    "UTF-16": (_review().decode().encode("utf-16"), "not strict UTF-8 JSON"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_reviews_are_rejected_with_a_reason(name: str) -> None:
    """Each malformed body raises MalformedReview naming what is wrong."""
    body, reason = MALFORMED[name]
    with pytest.raises(review.MalformedReview, match=reason):
        review.parse(body, KEYS)


def test_pod_name_needs_exactly_one_value() -> None:
    """Only a single pod-name extra counts as a pod-bound token."""
    extra = {review.POD_NAME_EXTRA: ["a", "b"]}
    req = review.parse(_review(userInfo={"username": "sa", "extra": extra}), KEYS)
    assert req.pod_name == ""
    extra = {review.POD_NAME_EXTRA: ["reconciler-0"]}
    req = review.parse(_review(userInfo={"username": "sa", "extra": extra}), KEYS)
    assert req.pod_name == "reconciler-0"


def test_response_for_a_denial() -> None:
    """A denial carries code 403, the message, and echoes the uid."""
    out = review.response("abc", decision.Decision(False, "not-gitops", message="use git"))
    assert out == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "abc",
            "allowed": False,
            "status": {"code": 403, "reason": "Forbidden", "message": "use git"},
        },
    }


def test_response_for_an_allow_with_warning_and_audit() -> None:
    """Warnings and audit annotations pass through on an allow; no status is sent."""
    allow = decision.Decision(True, "break-glass", warnings=("w",), audit={"break-glass": "x"})
    out = review.response("abc", allow)["response"]
    assert out == {
        "uid": "abc",
        "allowed": True,
        "warnings": ["w"],
        "auditAnnotations": {"break-glass": "x"},
    }
