"""Smoke tests proving the control plane is real: RBAC, client certificates, bound tokens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.harness import controllers
from tests.harness.controlplane import REPO_ROOT, ControlPlane

pytestmark = pytest.mark.cluster

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"


def whoami(api_client: k8s.ApiClient) -> k8s.V1UserInfo:
    """The identity the API server sees for a client (SelfSubjectReview)."""
    review = k8s.AuthenticationV1Api(api_client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    info = review.status.user_info
    assert isinstance(info, k8s.V1UserInfo)
    return info


def test_admin_creates_namespace_and_configmap(admin: k8s.ApiClient, namespace: str) -> None:
    """The admin writes a ConfigMap and reads back exactly what it wrote from etcd."""
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "smoke"}, "data": {"answer": "42"}}
    )
    stored = core.read_namespaced_config_map("smoke", namespace)
    assert stored.data == {"answer": "42"}
    assert stored.metadata.uid
    assert core.read_namespace(namespace).status.phase == "Active"


def test_user_without_rbac_is_forbidden(control_plane: ControlPlane, namespace: str) -> None:
    """A human user with a valid certificate but no RBAC binding gets 403."""
    # Not "alice": the webhook stacks (tests/attacks runs first) grant her edit rights.
    carol = control_plane.as_user("carol", ("team-c",))
    with pytest.raises(k8s.ApiException) as excinfo:
        k8s.CoreV1Api(carol).list_namespaced_config_map(namespace)
    assert excinfo.value.status == 403
    message = json.loads(excinfo.value.body or "{}")["message"]
    assert 'User "carol" cannot list resource "configmaps"' in message
    info = whoami(carol)
    assert info.username == "carol"
    assert "team-c" in info.groups


def test_user_with_rbac_is_allowed(
    control_plane: ControlPlane, admin: k8s.ApiClient, namespace: str
) -> None:
    """The same kind of user is allowed once a RoleBinding grants the verb."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "bob-reads"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "cm-reader",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
        },
    )
    bob = k8s.CoreV1Api(control_plane.as_user("bob"))
    deadline = time.monotonic() + 10  # the RBAC authorizer's informer catches up asynchronously
    while True:
        try:
            assert controllers.own_names(bob.list_namespaced_config_map(namespace).items) == []
            break
        except k8s.ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_service_account_token(control_plane: ControlPlane, namespace: str) -> None:
    """A TokenRequest token authenticates as the service account."""
    info = whoami(control_plane.as_service_account(namespace, "gitops"))
    assert info.username == f"system:serviceaccount:{namespace}:gitops"
    assert f"system:serviceaccounts:{namespace}" in info.groups
    assert POD_NAME_EXTRA not in (info.extra or {})


def test_pod_bound_service_account_token(control_plane: ControlPlane, namespace: str) -> None:
    """A token bound to a Pod carries the pod-name extra that the webhook can require."""
    info = whoami(control_plane.as_service_account(namespace, "gitops", pod="reconciler-0"))
    assert info.username == f"system:serviceaccount:{namespace}:gitops"
    assert info.extra[POD_NAME_EXTRA] == ["reconciler-0"]


def test_bad_token_is_unauthorized(control_plane: ControlPlane) -> None:
    """A forged token is rejected with 401: authentication is really on."""
    from tests.harness.controlplane import Credentials

    forged = control_plane.client_for(Credentials(token="not-a-real-token"))
    with pytest.raises(k8s.ApiException) as excinfo:
        k8s.CoreV1Api(forged).list_namespace()
    assert excinfo.value.status == 401


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.parametrize("how", ["failing-test", "sigterm", "sigkill"])
def test_no_orphans_when_a_run_fails_or_is_interrupted(how: str, tmp_path: Path) -> None:
    """A child pytest run that fails, is terminated or is killed leaves no control plane behind."""
    pids_file, go_file = tmp_path / "pids", tmp_path / "go"
    test_file = tmp_path / "test_child.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import time
            from pathlib import Path

            def test_child(control_plane):
                Path({str(pids_file)!r}).write_text(
                    " ".join(str(p) for p in control_plane.pids()))
                # Hold the control plane up until the parent has seen its processes alive.
                deadline = time.monotonic() + 120
                while not Path({str(go_file)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if {how!r} == "failing-test":
                    raise AssertionError("failing on purpose")
                time.sleep(600)
            """
        )
    )
    log_path = tmp_path / "child.log"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-p",
                "tests.conftest",
                "-q",
                str(test_file),
                "--rootdir",
                str(REPO_ROOT),
                "-c",
                str(REPO_ROOT / "pyproject.toml"),
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while not pids_file.exists() or not pids_file.read_text():
            if child.poll() is not None:
                pytest.fail(
                    f"child run ended before its control plane started:\n{log_path.read_text()}"
                )
            assert time.monotonic() < deadline, "child control plane did not start"
            time.sleep(0.2)
        pids = [int(p) for p in pids_file.read_text().split()]
        assert len(pids) == 3  # etcd, kube-apiserver, kube-controller-manager
        assert all(_alive(p) for p in pids)
        go_file.touch()
        if how == "sigterm":
            child.send_signal(signal.SIGTERM)
        elif how == "sigkill":
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output = log_path.read_text(errors="replace")
    if how == "failing-test":
        assert child.returncode == 1, output
        assert "failing on purpose" in output
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], f"orphaned control-plane processes after {how}"


def test_a_missing_controller_manager_fails_loudly_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tools without kube-controller-manager: `MissingTool` naming it and `make tools`."""
    from tests.harness import controlplane

    for name in ("etcd", "kube-apiserver"):
        (tmp_path / name).symlink_to(controlplane.tool(name))
    monkeypatch.setenv("GITWARDEN_TOOLS_BIN", str(tmp_path))
    plane = controlplane.ControlPlane(workdir=tmp_path / "work")
    (tmp_path / "work").mkdir()
    with pytest.raises(controlplane.MissingTool, match=r"kube-controller-manager.*make tools"):
        plane.start()
    assert plane.pids() == []
    plane.stop()
