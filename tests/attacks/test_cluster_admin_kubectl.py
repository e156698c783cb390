"""Attack: cluster-admin (system:masters) changes a managed object with everyday kubectl verbs.

`kubectl edit`, `scale`, `delete` and `label --overwrite` as the harness's admin certificate
(RBAC allows it everything): each is denied by GitWarden's webhook with a message pointing to
Git, and the object is exactly as GitOps left it afterwards.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.e2e.webhook_stack import HOOK, MANAGED, Stack, create_managed

pytestmark = pytest.mark.cluster

VERBS = {
    "edit": ("edit", "configmap/cm"),
    "scale": ("scale", "deployment/web", "--replicas=4"),
    "delete": ("delete", "configmap", "cm"),
    "label --overwrite": ("label", "--overwrite", "configmap", "cm", "gitwarden.dev/managed=no"),
}


def admin_kubectl(stack: Stack, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = stack.plane.admin_kubeconfig(workdir / f"admin-{uuid.uuid4().hex[:6]}")
    env = {
        **os.environ,
        "KUBECTL_KUBERC": "false",
        "TMPDIR": str(workdir),  # where kubectl edit keeps a refused edit
        "KUBE_EDITOR": "sed -i s/k:\\ v/k:\\ admin-edit/",
    }
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_cluster_admin_kubectl_is_denied_and_nothing_changes(
    stack: Stack, namespace: str, tmp_path: Path, verb: str
) -> None:
    create_managed(stack, namespace)
    core, apps = k8s.CoreV1Api(stack.gitops), k8s.AppsV1Api(stack.gitops)
    before = core.read_namespaced_config_map("cm", namespace)
    done = admin_kubectl(stack, tmp_path, "-n", namespace, *VERBS[verb])
    assert done.returncode != 0, done.stdout
    # Scale is decided on the parent's labels by its own hook.
    hook = "parent.gitwarden.gitwarden.dev" if verb == "scale" else HOOK
    assert f'admission webhook "{hook}" denied the request' in done.stderr, done.stderr
    assert "is managed by GitOps: admin may not" in done.stderr, done.stderr
    assert "Make the change in Git instead" in done.stderr
    after = core.read_namespaced_config_map("cm", namespace)
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.data == before.data
    for key, value in MANAGED.items():
        assert (after.metadata.labels or {}).get(key) == value
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 1
