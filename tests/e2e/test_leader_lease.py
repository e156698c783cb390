"""Leader election on a real Lease, as the GitOps identity, with GitWarden's webhook enforcing.

Two electors (each with its own cluster adapter, as two replicas have) run in threads against
the real kube-apiserver. Exactly one leads; a leader that stops without releasing is replaced
within lease_duration + retry_period; a released Lease is taken within about a retry period.
The GitOps identity may read and renew only the one Lease its Role names, and none of its
Lease writes is ever refused (the audit log is the witness).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client as k8s

from reconciler import cluster, cluster_errors, config, controlconfig, leader
from tests.e2e import reconcile_stack, webhook_stack

pytestmark = pytest.mark.cluster

NS = webhook_stack.GITOPS_NS
NAME = controlconfig.DEFAULT_LEASE
FAST = controlconfig.LeaderConfig(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
# A request to the API server, and a thread noticing an Event, are not instant.
SLACK = 1.0


@dataclass
class Replica:
    """One elector on its own thread, as one reconciler process."""

    elector: leader.Elector
    stop: threading.Event
    thread: threading.Thread
    adapter: cluster.Cluster

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def _gone(admin: k8s.ApiClient) -> None:
    with contextlib.suppress(k8s.ApiException):
        k8s.CoordinationV1Api(admin).delete_namespaced_lease(NAME, NS)


@pytest.fixture
def replicas(env: reconcile_stack.Env) -> Iterator[list[Replica]]:
    """Two electors as the GitOps identity, started; the Lease is deleted before and after."""
    _gone(env.admin)
    made = []
    for index in range(2):
        adapter = cluster.connect(env.kubeconfig, config.ApplyConfig())
        holder = f"replica-{index}_{leader.holder_identity()}"
        elector = leader.Elector(leader.KubeLeases(adapter), NS, NAME, holder, FAST)
        stop = threading.Event()
        thread = threading.Thread(target=elector.run, args=(stop,), daemon=True)
        made.append(Replica(elector, stop, thread, adapter))
    for replica in made:
        replica.thread.start()
    try:
        yield made
    finally:
        for replica in made:
            replica.stop.set()
        for replica in made:
            replica.thread.join(10)
            replica.adapter.close()
        _gone(env.admin)


def _wait_leader(candidates: list[Replica], timeout: float) -> Replica:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leading = [r for r in candidates if r.elector.leading.is_set()]
        if leading:
            return leading[0]
        time.sleep(0.02)
    raise AssertionError(f"no leader within {timeout:g}s")


def _exactly_one_leads_for(replicas: list[Replica], seconds: float) -> Replica:
    """Sample leadership for `seconds`: never two leaders, always the same one."""
    first = _wait_leader(replicas, FAST.lease_duration + FAST.retry_period + SLACK)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        leading = [r for r in replicas if r.elector.leading.is_set()]
        assert leading == [first]
        time.sleep(0.05)
    return first


def _lease(admin: k8s.ApiClient) -> k8s.V1LeaseSpec:
    spec = k8s.CoordinationV1Api(admin).read_namespaced_lease(NAME, NS).spec
    assert spec is not None
    return spec


def test_exactly_one_of_two_leads_and_a_dead_leader_is_replaced_after_the_lease(
    env: reconcile_stack.Env, replicas: list[Replica]
) -> None:
    first = _exactly_one_leads_for(replicas, 3 * FAST.retry_period + FAST.lease_duration)
    assert _lease(env.admin).holder_identity == first.elector.holder
    other = next(r for r in replicas if r is not first)
    # The leader dies without a word: no release, its renewals simply stop.
    first.halt()
    stopped = time.monotonic()
    assert other.elector.leading.wait(FAST.lease_duration + FAST.retry_period + SLACK)
    took = time.monotonic() - stopped
    # Not before the Lease could have expired: the last renewal seen was at most one retry
    # period before the stop.
    assert took >= FAST.lease_duration - FAST.retry_period - 0.1, took
    spec = _lease(env.admin)
    assert spec.holder_identity == other.elector.holder
    assert spec.lease_transitions == 1
    assert not other.elector.lost.is_set()


def test_a_released_lease_is_taken_within_a_retry_period(
    env: reconcile_stack.Env, replicas: list[Replica]
) -> None:
    first = _exactly_one_leads_for(replicas, 1.0)
    other = next(r for r in replicas if r is not first)
    first.halt()
    released = time.monotonic()
    first.elector.release()
    assert not first.elector.leading.is_set()
    assert other.elector.leading.wait(FAST.retry_period + SLACK)
    assert time.monotonic() - released < FAST.lease_duration  # far sooner than an expiry
    assert _lease(env.admin).holder_identity == other.elector.holder


def test_a_leader_that_cannot_renew_stops_leading_within_the_renew_deadline(
    env: reconcile_stack.Env, replicas: list[Replica]
) -> None:
    """The API server takes the Lease away (the admin hands it to someone else): the leader
    notices at its next renewal and stops leading, without waiting for its deadline."""
    first = _exactly_one_leads_for(replicas, 0.5)
    for replica in replicas:
        if replica is not first:
            replica.halt()
    k8s.CoordinationV1Api(env.admin).patch_namespaced_lease(
        NAME, NS, {"spec": {"holderIdentity": "intruder"}}
    )
    assert first.elector.lost.wait(FAST.renew_deadline + SLACK)
    assert not first.elector.leading.is_set()
    first.thread.join(5)
    assert not first.thread.is_alive()  # run() returned: the process would exit


def test_the_gitops_identity_may_renew_only_its_own_lease(env: reconcile_stack.Env) -> None:
    adapter = cluster.connect(env.kubeconfig, config.ApplyConfig())
    leases = leader.KubeLeases(adapter)
    other = "provoked-other-lease"
    record = leader.LeaseRecord(holder="me", lease_duration=5)
    try:
        # create cannot be limited by name: it succeeds...
        version = leases.create(NS, other, record)
        assert version
        # ...but that Lease can then be neither read nor renewed by this identity.
        with pytest.raises(cluster_errors.Forbidden):
            leases.get(NS, other)
        with pytest.raises(cluster_errors.Forbidden):
            leases.update(NS, other, record, version)
        # And nothing outside GitWarden's namespace.
        with pytest.raises(cluster_errors.Forbidden):
            leases.create("default", "provoked-elsewhere", record)
    finally:
        adapter.close()
        with contextlib.suppress(k8s.ApiException):
            k8s.CoordinationV1Api(env.admin).delete_namespaced_lease(other, NS)


def test_no_lease_write_of_the_gitops_identity_was_ever_denied(
    env: reconcile_stack.Env, started: dt.datetime, replicas: list[Replica]
) -> None:
    """The webhook is enforcing (a managed write by a person is denied), yet every Lease
    create and update the electors made went through."""
    this_test = dt.datetime.now(dt.UTC)  # no slack: the RBAC probes just before are refused
    first = _exactly_one_leads_for(replicas, 3 * FAST.retry_period)  # create, then renewals
    first.halt()
    first.elector.release()
    webhook_stack.denied_message(
        lambda: k8s.CoreV1Api(env.stack.alice).create_namespaced_config_map(
            "default", webhook_stack.configmap("probe-lease-e2e", webhook_stack.MANAGED)
        )
    )
    events = [
        e
        for e in env.stack.plane.audit_events()
        if (e.get("user") or {}).get("username") == reconcile_stack.GITOPS_USER
        and (e.get("objectRef") or {}).get("resource") == "leases"
        and (e.get("objectRef") or {}).get("name") == NAME
        and dt.datetime.fromisoformat(e["requestReceivedTimestamp"]) >= started
    ]
    verbs = {e["verb"] for e in events}
    assert {"create", "update", "get"} <= verbs, verbs
    codes = {
        (e["verb"], (e.get("responseStatus") or {}).get("code"))
        for e in events
        if e["verb"] in ("create", "update")
    }
    # 409s are lost races (an answer, not a denial); nothing else but success.
    assert {code for _, code in codes} <= {200, 201, 409}, codes
    # Across the whole module, only the RBAC probes above were refused (a create has no name
    # in the audit record, so that one is known by its namespace).
    refused = [
        (e["verb"], e.get("objectRef"))
        for e in env.stack.plane.audit_events()
        if (e.get("user") or {}).get("username") == reconcile_stack.GITOPS_USER
        and dt.datetime.fromisoformat(e["requestReceivedTimestamp"]) >= started
        and (
            (e.get("responseStatus") or {}).get("code") == 403
            or "denied" in str(e.get("annotations"))
        )
        and not str((e.get("objectRef") or {}).get("name", "")).startswith("provoked-")
        and (e.get("objectRef") or {}).get("namespace") != "default"
    ]
    assert refused == []
    reconcile_stack.assert_never_denied(env, this_test)


def _lease_review(operation: str, labels: dict[str, str]) -> bytes:
    def lease(holder: str) -> dict[str, object]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NS, "labels": labels},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3},
        }

    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "5f0e6a4c-lease-e2e",
            "kind": {"group": "coordination.k8s.io", "version": "v1", "kind": "Lease"},
            "resource": {"group": "coordination.k8s.io", "version": "v1", "resource": "leases"},
            "requestKind": {"group": "coordination.k8s.io", "version": "v1", "kind": "Lease"},
            "requestResource": {
                "group": "coordination.k8s.io",
                "version": "v1",
                "resource": "leases",
            },
            "name": NAME,
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": reconcile_stack.GITOPS_USER, "groups": []},
            "object": lease("replica-b"),
            "oldObject": lease("replica-a") if operation == "UPDATE" else None,
            "dryRun": False,
            "options": None,
        },
    }
    return json.dumps(review).encode()


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
@pytest.mark.parametrize("labels", [{}, webhook_stack.MANAGED], ids=["plain", "managed-label"])
def test_the_webhook_allows_the_gitops_identitys_lease_writes_even_if_sent_them(
    env: reconcile_stack.Env, operation: str, labels: dict[str, str]
) -> None:
    """The registration skips Leases, so the API server never asks; should it ever (an API
    server that ignores match conditions, a changed registration), the answer is still yes."""
    status, answer = env.stack.webhook.post(_lease_review(operation, labels))
    assert status == 200
    assert answer["response"]["allowed"] is True, answer
