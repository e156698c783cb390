"""Names, namespaces and lookup targets in an AdmissionReview, checked as Kubernetes does."""

from __future__ import annotations

import copy
import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.webhook import reviews
from webhook import review

KEYS = frozenset({"gitwarden.dev/source-path"})
GOLDEN = reviews.golden()["cases"]
SCALE = GOLDEN["scale_by_human_denied"]["input"]
CONFIGMAP = GOLDEN["user_update_configmap_denied"]["input"]


def _body(case: dict[str, Any], **request: Any) -> bytes:
    built = reviews.review_from_input(copy.deepcopy(case))
    for key, value in request.items():
        if key.startswith("resource_"):
            built["request"]["resource"][key.removeprefix("resource_")] = value
        else:
            built["request"][key] = value
    return reviews.body(built)


@pytest.mark.parametrize(
    "name",
    ["web", "kube-root-ca.crt", "system:controller:job-controller", "x?watch=true", "a" * 253],
)
def test_names_any_kind_may_have_are_parsed(name: str) -> None:
    """RBAC names may hold colons (and even '?'): only what no kind allows is refused."""
    assert review.parse(_body(CONFIGMAP, name=name), KEYS).name == name


@pytest.mark.parametrize("name", [".", "..", "a/b", "x%2Fsecrets", "a" * 254])
def test_names_no_kind_may_have_are_malformed(name: str) -> None:
    """A name that could not be a URL path segment is not from the API server: 400."""
    with pytest.raises(review.MalformedReview, match=r"request\.name is not a valid object name"):
        review.parse(_body(CONFIGMAP, name=name), KEYS)


@pytest.mark.parametrize("namespace", ["Team-a", "team_a", "team.a", "-a", "a" * 64, "a/b"])
def test_namespaces_must_be_dns_1123_labels(namespace: str) -> None:
    """Every Kubernetes namespace name is a DNS-1123 label."""
    with pytest.raises(review.MalformedReview, match=r"request\.namespace is not a valid"):
        review.parse(_body(CONFIGMAP, namespace=namespace), KEYS)


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"name": "x?watch=true"}, "request.name is not a valid name for deployments"),
        ({"name": "Web"}, "request.name is not a valid name"),
        ({"name": "web#x"}, "request.name is not a valid name"),
        ({"name": "system:web"}, "request.name is not a valid name"),
        ({"name": ""}, "request.name is not a valid name"),
        ({"resource_group": "apps/v1/x"}, "request.resource.group is not a valid API group"),
        ({"resource_version": "v1?watch=1"}, "request.resource.version is not a valid"),
        ({"resource_version": ""}, "request.resource.version is not a valid"),
        ({"resource_resource": "deployments/x"}, "request.resource.resource is not a valid"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_scale_targets_must_be_names_a_scalable_object_can_have(
    request_fields: dict[str, str], reason: str
) -> None:
    """Workloads and custom resources have DNS-1123 subdomain names; the rest is refused."""
    req = review.parse(_body(SCALE, **request_fields), KEYS)
    with pytest.raises(review.MalformedReview, match=reason.replace("?", r"\?")):
        review.check_lookup_target(req)


def test_a_valid_scale_target_passes() -> None:
    """The golden scale review (apps/v1 deployments team-a/web) is looked up."""
    review.check_lookup_target(review.parse(_body(SCALE), KEYS))
    review.check_lookup_target(review.parse(_body(SCALE, name="web.v2-blue"), KEYS))


def test_deletecollection_takes_the_name_from_the_old_object() -> None:
    """The API server sends each object of a deletecollection with an empty request.name."""
    case = copy.deepcopy(GOLDEN["user_update_configmap_denied"]["input"])
    case |= {"operation": "DELETE", "object": None, "changedFields": []}
    built = reviews.review_from_input(case)
    built["request"]["name"] = ""
    assert review.parse(reviews.body(built), KEYS).name == "web"
    built["request"]["oldObject"]["metadata"]["name"] = "a/b"
    with pytest.raises(review.MalformedReview, match=r"request\.name is not a valid"):
        review.parse(reviews.body(built), KEYS)


@pytest.mark.parametrize(
    "body",
    [
        b'{"apiVersion": ' + b"1" * 5000 + b"}",
        b"[" + b"9" * 4301 + b"]",
        b"-" + b"9" * 5000,
    ],
    ids=["in-object", "in-array", "top-level"],
)
def test_integers_past_pythons_digit_limit_are_malformed(body: bytes) -> None:
    """ValueError from int conversion is a 400 reason, never an internal error."""
    with pytest.raises(review.MalformedReview, match="a number has too many digits"):
        review.parse(body, KEYS)


_URL_BREAKERS = set("/?#%&=;\\ ") | set(string.ascii_uppercase)


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(max_size=80),
    namespace=st.text(alphabet="abc-./?%Z09", max_size=12),
    group=st.sampled_from(["", "apps", "apps/v1", "x?y", "example.com"]),
)
def test_fuzzed_targets_are_refused_or_harmless_in_a_url(
    name: str, namespace: str, group: str
) -> None:
    """Any name: parse or 400; a name that passes the scale check cannot alter a URL."""
    body = _body(SCALE, name=name, namespace=namespace, resource_group=group)
    try:
        req = review.parse(body, KEYS)
        review.check_lookup_target(req)
    except review.MalformedReview:
        return
    for part in (req.name, req.namespace, req.resource_group):
        assert not _URL_BREAKERS & set(part), part
    assert json.loads(body)["request"]["name"] == req.name
