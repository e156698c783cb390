"""Fixtures the reconcile end-to-end modules share: one running environment per module."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.e2e import reconcile_stack
from tests.harness.controlplane import ControlPlane


@pytest.fixture(scope="module")
def started() -> dt.datetime:
    """When this module's first test began: audit events before it belong to other modules."""
    return reconcile_stack.started_now()


@pytest.fixture(scope="module")
def env(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
    started: dt.datetime,  # before the first request, so the audit check sees every one
) -> Iterator[reconcile_stack.Env]:
    """The admission stack, the GitOps identity, a sealing key and the Sync CRD, per module."""
    workdir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with reconcile_stack.running_env(control_plane, admin, workdir) as running:
        yield running
