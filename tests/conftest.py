"""Shared pytest fixtures: the session-wide real control plane and its clients.

A missing tool fails the run with the command that builds it; nothing here skips or fakes.
"""

from __future__ import annotations

import os
import signal
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.harness.controlplane import ControlPlane, MissingTool, running_control_plane


def _terminate(signum: int, frame: types.FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C so session fixtures stop their
    # processes and remove their files; PR_SET_PDEATHSIG covers the SIGKILL case.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _terminate)


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 for the whole session.

    When a test failed, the processes' logs and the audit log are kept in the session's
    temporary directory (`control-plane-logs/`), or always in GITWARDEN_CONTROL_PLANE_LOGS
    when that names a directory: the work directory goes with the processes.
    """
    keep = os.environ.get("GITWARDEN_CONTROL_PLANE_LOGS")
    try:
        with running_control_plane() as plane:
            yield plane
            if keep:
                plane.save_logs(Path(keep))
            elif request.session.testsfailed:
                plane.save_logs(tmp_path_factory.getbasetemp() / "control-plane-logs")
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> k8s.ApiClient:
    """An API client for the `system:masters` admin."""
    return control_plane.admin()


@pytest.fixture
def namespace(admin: k8s.ApiClient) -> str:
    """A fresh namespace per test (left in place: later audit checks may name its objects)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    k8s.CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    return name
