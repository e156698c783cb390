"""`Facts.next_read`, what the event loop may gather: exactly `gather`'s answer, or the read
`gather` would have made.

Every golden case on every review route, under the default configuration and one with
pod-bound tokens verified live: `gather` runs with a recording fake of the lookup port, and
`next_read` with nothing known (and no lookup at all) must name a read precisely when that
fake was asked anything, and otherwise give the same request and facts; driven read by read
with the same fake's answers, it asks the same reads in the same order.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from tests.webhook import reviews
from tests.webhook.fakes import FakeParents
from webhook import config as config_mod
from webhook import facts as facts_mod
from webhook import parents, review

GOLDEN = reviews.golden()
KEYS = frozenset({"gitwarden.dev/path"})
ROUTES = {
    "plain": facts_mod.Route(),
    "protected-namespace": facts_mod.Route(namespace_protected=True),
    "parent": facts_mod.Route(parent=True),
    "namespace-delete": facts_mod.Route(namespace_delete=True),
    "crd-delete": facts_mod.Route(crd_delete=True),
}
CONFIGS = {
    "default": config_mod.AdmissionConfig(guarded_crd_groups=("example.com",)),
    "pod-live": config_mod.AdmissionConfig(
        require_pod_bound_token=True,
        pod_name_prefixes=("gitwarden-reconciler-",),
        verify_pod_live=True,
        pod_labels={"app.kubernetes.io/name": "gitwarden-reconciler"},
    ),
}


_GITOPS = GOLDEN["cases"]["gitops_update_deployment"]["input"]
# A pod-bound token of the reconciler's: only verify_pod_live looks its pod up.
CASES = {
    **GOLDEN["cases"],
    "pod_bound_gitops_update": {
        "input": {
            **_GITOPS,
            "userInfo": {**_GITOPS["userInfo"], "podName": "gitwarden-reconciler-0"},
        }
    },
}


def _request(case: dict[str, Any]) -> review.AdmissionRequest | None:
    try:
        return review.parse(reviews.body(reviews.review_from_input(case["input"])), KEYS)
    except review.MalformedReview:
        return None


class _Refusing(FakeParents):
    """A lookup that must never be reached."""

    def metadata(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> parents.ParentMeta | None:
        raise AssertionError(f"next_read looked up {resource} {namespace}/{name}")

    def any_labelled(
        self, group: str, version: str, resource: str, namespace: str, selector: str
    ) -> bool:
        raise AssertionError(f"next_read listed {resource} in {namespace}")


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_with_nothing_known_next_read_names_a_read_exactly_where_gather_looks_up(
    config_name: str, route_name: str
) -> None:
    config, route = CONFIGS[config_name], ROUTES[route_name]
    declined: set[str] = set()
    answered = 0
    for name, case in sorted(CASES.items()):
        req = _request(case)
        if req is None:
            continue
        fake = FakeParents(labels={"gitwarden.dev/managed": "true"}, holding=frozenset({"pods"}))
        gathering = facts_mod.Facts(config, facts_mod.LazyLookup(None, 1.0, fake), KEYS)
        try:
            gathered: Any = gathering.gather(req, route)
        except parents.LookupFailed:
            gathered = "lookup refused"
        looked_up = bool(fake.asked or fake.listed)
        local = facts_mod.Facts(config, facts_mod.LazyLookup(None, 1.0, _Refusing()), KEYS)
        try:
            first: Any = local.next_read(req, route, {})
        except parents.LookupFailed:
            first = "lookup refused"
        if looked_up:
            assert isinstance(first, parents.Read), name
            declined.add(name)
        else:
            assert first == gathered, name
            answered += 1
    # Both outcomes are exercised: lookups of parents, namespaces and pods.
    assert answered > 0
    if route.parent:  # a Deployment or a Namespace is no parent kind: refused before lookups
        assert "eviction_of_managed_pod_denied" in declined
    else:
        assert ("pod_bound_gitops_update" in declined) == (config_name == "pod-live")
        assert "namespace_controller_delete_allowed" in declined


def _answer(fake: FakeParents, read: parents.Read) -> parents.Answered | parents.LookupFailed:
    """What `fake` answers for `read`, asked through its own port (so it records the call)."""
    path, _, query = read.target.partition("?")
    segments = path.strip("/").split("/")
    group, version = ("", segments[1]) if segments[0] == "api" else (segments[1], segments[2])
    rest = segments[2:] if segments[0] == "api" else segments[3:]
    namespaced = rest[0] == "namespaces" and len(rest) > 2  # not the Namespace object itself
    namespace = rest[1] if namespaced else ""
    rest = rest[2:] if namespaced else rest
    try:
        if read.listing:
            selector = urllib.parse.parse_qs(query)["labelSelector"][0]
            return fake.any_labelled(group, version, rest[0], namespace, selector)
        return fake.metadata(group, version, rest[0], namespace, rest[1])
    except parents.LookupFailed as exc:
        return exc


@pytest.mark.parametrize("fail", [False, True], ids=["answered", "failing"])
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_next_read_driven_to_its_end_gathers_what_gather_does(
    config_name: str, route_name: str, fail: bool
) -> None:
    """The event loop's way (`next_read`, one read at a time, each answered by the same
    fake) asks the same reads in the same order and ends with `gather`'s request and facts,
    or its failure; `gather` given those answers then asks nothing more."""
    config, route = CONFIGS[config_name], ROUTES[route_name]
    reads = 0
    for name, case in sorted(CASES.items()):
        req = _request(case)
        if req is None:
            continue

        def fake() -> FakeParents:
            return FakeParents(
                labels={"gitwarden.dev/managed": "true"}, holding=frozenset({"pods"}), fail=fail
            )

        threaded = fake()
        facts = facts_mod.Facts(config, facts_mod.LazyLookup(None, 1.0, threaded), KEYS)
        try:
            gathered: Any = facts.gather(req, route)
        except parents.LookupFailed as exc:
            gathered = f"failed: {exc}"
        looped = fake()
        known: facts_mod.Known = {}
        try:
            while isinstance(step := facts.next_read(req, route, known), parents.Read):
                known[step] = _answer(looped, step)
                reads += 1
            stepped: Any = step
        except parents.LookupFailed as exc:
            stepped = f"failed: {exc}"
        assert stepped == gathered, name
        assert (looped.asked, looped.listed) == (threaded.asked, threaded.listed), name
        if not isinstance(stepped, str):
            refusing = facts_mod.Facts(config, facts_mod.LazyLookup(None, 1.0, _Refusing()), KEYS)
            assert refusing.gather(req, route, known) == gathered, name
    assert reads > 0
