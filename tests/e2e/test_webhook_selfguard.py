"""The self-guard end to end: switching the webhook off by patching its configuration, noticed
and undone by `gitwarden audit --restore`, against the real API server, OPA and webhook.

The API server never sends ValidatingWebhookConfigurations to webhooks, so the attack itself
always succeeds; what is tested is that GitWarden names who did it and puts it back, after
which a human's change to a managed object is denied again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.e2e.webhook_stack import (
    GITOPS_NS,
    GITOPS_SA,
    HOOK,
    MANAGED,
    REPO,
    Stack,
    _grant,
    _user,
    configmap,
    denied_message,
    running_stack,
    wait_until,
)
from tests.harness import cli
from tests.harness.controlplane import ControlPlane
from webhook import config as config_mod

pytestmark = pytest.mark.cluster

DOCUMENT: dict[str, Any] = {
    "namespace": GITOPS_NS,
    "gitops": {"service_account": GITOPS_SA},
    "repository": {"url": REPO, "default_path": "clusters/test/"},
}
SWITCH_OFF = {
    "webhooks": [{"name": HOOK, "matchConditions": [{"name": "x", "expression": "false"}]}]
}


@pytest.fixture(scope="module")
def stack(
    control_plane: ControlPlane, admin: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The webhook stack for DOCUMENT; alice may also edit webhook configurations."""
    _grant(
        admin,
        "e2e-webhook-config-editor",
        [_user("alice")],
        [
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations"],
                "verbs": ["get", "list", "patch", "update"],
            }
        ],
    )
    config = config_mod.from_document(DOCUMENT)
    with running_stack(control_plane, admin, tmp_path_factory.mktemp("selfguard"), config) as s:
        yield s


def _audit(stack: Stack, admin_kc: Path, *args: str) -> tuple[int, str, str]:
    config = stack.workdir / "admission.yaml"
    config.write_text(yaml.safe_dump(DOCUMENT))
    ca = stack.workdir / "webhook-ca.crt"
    ca.write_bytes(stack.plane.webhook_ca.cert_pem)
    done = cli.run(
        "audit",
        "--kubeconfig", str(admin_kc),
        "--config", str(config),
        "--url", stack.webhook.url,
        "--ca-bundle", str(ca),
        *args,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def _alice_edit_allowed(stack: Stack, namespace: str) -> bool:
    try:
        k8s.CoreV1Api(stack.alice).patch_namespaced_config_map(
            "cm", namespace, {"data": {"k": uuid.uuid4().hex}}
        )
    except k8s.ApiException as exc:
        if exc.status != 403:
            raise
        return False
    return True


def test_patched_match_conditions_are_reported_with_their_manager_and_restored(
    stack: Stack, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """alice adds `matchConditions: [{name: x, expression: "false"}]`; audit names
    kubectl-patch, restores, and alice's edit of a managed ConfigMap is denied again."""
    admin_kc = control_plane.admin_kubeconfig(tmp_path / "admin.kc")
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    denied_message(
        lambda: k8s.CoreV1Api(stack.alice).patch_namespaced_config_map(
            "cm", namespace, {"data": {"k": "by-alice"}}
        )
    )
    code, before, _ = _audit(stack, admin_kc)
    assert "ValidatingWebhookConfiguration gitwarden: as configured" in before, before

    patched = stack.kubectl(
        stack.alice_creds, "patch", "validatingwebhookconfiguration", "gitwarden",
        "--type=strategic", "-p", json.dumps(SWITCH_OFF),
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    # The attack works: the webhook is never called any more.
    wait_until(lambda: _alice_edit_allowed(stack, namespace), "the switched-off webhook")

    code, out, _ = _audit(stack, admin_kc, "--restore")
    print(out)  # the README's sample output comes from here (`pytest -s`)
    assert code == 1
    assert f"webhooks[{HOOK}].matchConditions[x]: changed by kubectl-patch (Update" in out
    assert 'live:     {"expression": "false", "name": "x"}' in out
    assert "restored with server-side apply (field manager gitwarden)" in out
    # alice holds patch on webhook configurations: the RBAC part says so too.
    assert any(
        line.startswith("finding") and "User alice" in line and "webhook-configuration" in line
        for line in out.splitlines()
    ), out

    wait_until(lambda: not _alice_edit_allowed(stack, namespace), "the restored webhook")
    live = k8s.AdmissionregistrationV1Api(
        control_plane.admin()
    ).read_validating_webhook_configuration("gitwarden")
    managed = live.webhooks[0]
    assert "x" not in [c.name for c in managed.match_conditions]
    # The attacker's manager owns nothing any more; gitwarden applies the whole document (the
    # creator of the object still shares the fields it set to the same values).
    owners = {(e.manager, e.operation) for e in live.metadata.managed_fields}
    assert ("gitwarden", "Apply") in owners
    assert "kubectl-patch" not in {manager for manager, _ in owners}
    code, after, _ = _audit(stack, admin_kc, "--json")
    assert json.loads(after)["webhook_configuration"]["drift"] == []


def test_a_human_change_in_gitwardens_namespace_is_reported_with_its_manager(
    stack: Stack, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """GitWarden's namespace is excluded from admission: alice's edit of its OPA data is not
    denied, but the audit names her field manager and the fields (never the values)."""
    name = f"opa-data-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(
        GITOPS_NS, configmap(name), field_manager="gitwarden"
    )
    edited = stack.kubectl(
        stack.alice_creds, "-n", GITOPS_NS, "patch", "configmap", name,
        "-p", json.dumps({"data": {"fail_open": "secret-ish-value"}}),
    )  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    code, out, _ = _audit(stack, control_plane.admin_kubeconfig(tmp_path / "a.kc"), "--json")
    assert code == 1
    changes = [c for c in json.loads(out)["namespace_changes"] if c["name"] == name]
    assert changes == [
        {
            "kind": "ConfigMap",
            "name": name,
            "manager": "kubectl-patch",
            "operation": "Update",
            "time": changes[0]["time"],
            "fields": ["data"],
        }
    ]
    assert "secret-ish-value" not in out


def test_a_deleted_webhook_configuration_is_reported_missing_and_recreated(
    stack: Stack, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Deleting the configuration switches admission off; --restore puts it back."""
    admin_kc = control_plane.admin_kubeconfig(tmp_path / "admin.kc")
    k8s.CoreV1Api(stack.gitops).create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    control_plane.delete_validating_webhook("gitwarden")
    wait_until(lambda: _alice_edit_allowed(stack, namespace), "admission to be switched off")
    code, out, _ = _audit(stack, admin_kc, "--restore")
    assert code == 1
    assert "ValidatingWebhookConfiguration gitwarden: MISSING" in out
    assert "restored with server-side apply (field manager gitwarden)" in out
    wait_until(lambda: not _alice_edit_allowed(stack, namespace), "the recreated webhook")
