"""Fixtures for the apply stage and the cluster adapter against the real kube-apiserver."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from reconciler import cluster, config, status
from tests.harness.controlplane import ControlPlane

SETTINGS = config.ApplyConfig(qps=0, concurrency=4)


class Counted:
    """A cluster adapter with its own user agent, so the audit log tells its requests apart."""

    def __init__(self, plane: ControlPlane, admin: k8s.ApiClient, settings: config.ApplyConfig):
        self.plane = plane
        self.agent = f"gitwarden-test-{uuid.uuid4().hex[:8]}"
        self.cluster = cluster.Cluster(admin.configuration, settings, user_agent=self.agent)

    def audited(self) -> list[dict[str, Any]]:
        """Every audit event of this adapter's requests so far."""
        return [e for e in self.plane.audit_events() if e.get("userAgent") == self.agent]


@pytest.fixture
def counted(control_plane: ControlPlane, admin: k8s.ApiClient) -> Iterator[Counted]:
    """A fresh adapter (no rate limit) acting as the admin, counted through the audit log."""
    adapter = Counted(control_plane, admin, SETTINGS)
    yield adapter
    adapter.cluster.close()


@pytest.fixture
def target(counted: Counted) -> cluster.Cluster:
    return counted.cluster


@pytest.fixture
def applyset() -> str:
    """An ApplySet of its own per test, so lists by part-of label never see other tests."""
    return status.applyset_id(f"t-{uuid.uuid4().hex[:10]}")


def settle_deployments(admin: k8s.ApiClient, namespace: str, timeout: float = 60) -> None:
    """Wait until the real deployment controller has written and stopped writing.

    It writes each new Deployment's status and revision annotation right after creation, which
    moves its resourceVersion: a pass recorded before that sees an object someone else wrote
    and applies it once more (a no-op). Request-count tests settle first, then record a pass.
    """
    apps = k8s.AppsV1Api(admin)
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        items = apps.list_namespaced_deployment(namespace).items
        versions = {str(d.metadata.name): str(d.metadata.resource_version) for d in items}
        observed = all(
            d.status is not None and d.status.observed_generation == d.metadata.generation
            for d in items
        )
        if observed and versions == seen:
            return
        seen = versions
        time.sleep(1.0)
    raise AssertionError(f"Deployments in {namespace} still changing after {timeout:.0f}s")
