"""Pure parts of the apply stage: discovery parsing, the token bucket, the diff's masking."""

from __future__ import annotations

import threading

import pytest

from reconciler import changeset, discovery, objectdiff, objectref, ratelimit


def group_doc(
    name: str, versions: list[tuple[str, list[tuple[str, str, str]]]], stale: str = ""
) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "versions": [
            {
                "version": v,
                "freshness": "Stale" if v == stale else "Current",
                "resources": [
                    {"resource": plural, "responseKind": {"kind": kind}, "scope": scope}
                    for plural, kind, scope in res
                ],
            }
            for v, res in versions
        ],
    }


def test_discovery_keeps_preference_order_scope_and_drops_stale_versions() -> None:
    core = {
        "kind": "APIGroupDiscoveryList",
        "items": [
            group_doc(
                "",
                [
                    (
                        "v1",
                        [
                            ("configmaps", "ConfigMap", "Namespaced"),
                            ("namespaces", "Namespace", "Cluster"),
                        ],
                    )
                ],
            )
        ],
    }
    apis = {
        "kind": "APIGroupDiscoveryList",
        "items": [
            group_doc(
                "example.com",
                [
                    ("v2", [("widgets", "Widget", "Namespaced")]),
                    ("v1", [("widgets", "Widget", "Namespaced")]),
                    ("v0", [("gadgets", "Gadget", "Cluster")]),
                ],
                stale="v0",
            )
        ],
    }
    found = discovery.parse([core, apis])
    widget = found.get("example.com", "Widget")
    assert widget is not None
    assert widget.versions == ("v2", "v1")
    assert widget.path("ns", "w 1") == "/apis/example.com/v2/namespaces/ns/widgets/w%201"
    namespace = found.get("", "Namespace")
    assert namespace is not None
    assert namespace.path("ignored", "team") == "/api/v1/namespaces/team"
    assert found.get("example.com", "Gadget") is None


def test_discovery_refuses_the_legacy_format() -> None:
    with pytest.raises(discovery.Unsupported, match=r"1\.30"):
        discovery.parse([{"kind": "APIGroupList", "groups": []}])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_the_bucket_allows_a_burst_then_spaces_requests_by_qps() -> None:
    clock = FakeClock()
    bucket = ratelimit.TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert [round(w, 6) for w in waits[5:]] == [0.1, 0.1, 0.1]
    assert round(clock.now, 6) == 0.3


def test_a_zero_qps_bucket_never_waits() -> None:
    bucket = ratelimit.TokenBucket(
        0, 1, sleep=lambda s: (_ for _ in ()).throw(AssertionError("slept"))
    )
    assert sum(bucket.acquire() for _ in range(1000)) == 0.0


SECRET = objectref.ObjectRef("", "Secret", "ns", "db")


def secret(values: dict[str, str], **meta: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "ns",
            "resourceVersion": "5",
            "managedFields": [{"manager": "x"}],
            **meta,
        },
        "data": values,
    }


def test_secret_values_are_masked_on_both_sides_and_changes_marked() -> None:
    live = secret(
        {"password": "b2xk", "user": "YXBw"},
        annotations={objectdiff.LAST_APPLIED: '{"data":{"password":"b2xk"}}'},
    )
    result = secret({"password": "bmV3", "user": "YXBw", "added": "eHg="})
    found = objectdiff.compare(SECRET, live, result, created=False)
    assert found.action is changeset.Action.CONFIGURED
    for value in ("b2xk", "bmV3", "YXBw", "eHg="):
        assert value not in found.diff
    assert "+  password: '*** (changed)'" in found.diff
    assert "-  password: '***'" in found.diff
    assert "  user: '***'" in found.diff
    assert "managedFields" not in found.diff
    assert "resourceVersion" not in found.diff


def test_an_identical_object_has_no_diff() -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "resourceVersion": "1", "generation": 1},
        "data": {"k": "v"},
    }
    other = {**cm, "metadata": {"name": "a", "resourceVersion": "1", "managedFields": []}}
    found = objectdiff.compare(
        objectref.ObjectRef("", "ConfigMap", "", "a"), cm, other, created=False
    )
    assert (found.action, found.diff) == (changeset.Action.UNCHANGED, "")
