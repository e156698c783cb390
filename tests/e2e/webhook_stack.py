"""The webhook stack the end-to-end tests drive: OPA, gunicorn over TLS, and the registration.

Owns starting a complete admission path for one `AdmissionConfig` against the session's real
control plane (identities, RBAC, the ValidatingWebhookConfiguration) and the helpers the
webhook tests share. Nothing here is faked.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.harness import canaries
from tests.harness.controlplane import ControlPlane, Credentials
from tests.harness.services import CHART_DECISION_CACHE, OpaServer, WebhookServer
from webhook import config as config_mod
from webhook import registration

GITOPS_NS, GITOPS_SA = "gitwarden", "reconciler"
MANAGED = {"gitwarden.dev/managed": "true"}
BREAK_GLASS = "gitwarden:break-glass"
REPO = "https://git.example.com/platform/cluster.git"
HOOK = "managed.gitwarden.gitwarden.dev"
CONTROLLER = "system:serviceaccount:kube-system:"


@dataclass
class Stack:
    """Everything the tests drive."""

    plane: ControlPlane
    opa: OpaServer
    webhook: WebhookServer
    gitops: k8s.ApiClient
    alice: k8s.ApiClient
    alice_creds: Credentials
    oncall_creds: Credentials
    workdir: Path

    def metric(self, name: str) -> float:
        """Sum of a metric's samples whose line starts with `name`, across all workers."""
        with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
            f"{self.webhook.url}/metrics", context=self.webhook.tls_context(), timeout=5
        ) as resp:
            text = resp.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)
        )

    def kubectl(self, creds: Credentials, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the installed kubectl as `creds`."""
        kubeconfig = self.plane.kubeconfig(creds, self.workdir / f"kc-{uuid.uuid4().hex}")
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KUBECTL_KUBERC": "false"},
        )


def _grant(
    admin: k8s.ApiClient, name: str, subjects: list[dict[str, str]], rules: list[Any]
) -> None:
    """A ClusterRole and its binding; the same grant twice is fine."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    role = {"metadata": {"name": name}, "rules": rules}
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    }
    for create in (rbac.create_cluster_role, rbac.create_cluster_role_binding):
        try:
            create(role if create == rbac.create_cluster_role else binding)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise


EDIT = [
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "deployments/scale", "deployments/status"],
        "verbs": ["*"],
    },
]


def revoke(admin: k8s.ApiClient, *names: str) -> None:
    """Delete the ClusterRoles and bindings `_grant` made (missing ones are fine)."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    for name in names:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete(name)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise


def _user(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def _sa(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "namespace": namespace, "name": name}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def running_stack(
    control_plane: ControlPlane,
    admin: k8s.ApiClient,
    workdir: Path,
    config: config_mod.AdmissionConfig,
    webhook_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """OPA, the webhook (with `webhook_env` added) and its registration; all torn down on exit."""
    core = k8s.CoreV1Api(admin)
    for ns in (GITOPS_NS, "kube-system"):
        try:
            core.create_namespace({"metadata": {"name": ns}})
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
    opa = OpaServer(workdir, {"gitwarden": {"admission": config.to_opa_data()}})
    opa.start()
    # The webhook's own identity gets exactly what the registration says it needs.
    reader_rules = registration.webhook_rbac_rules(config)
    rbac = k8s.RbacAuthorizationV1Api(admin)
    with contextlib.suppress(k8s.ApiException):
        rbac.delete_cluster_role("e2e-webhook-parent-reader")
    _grant(admin, "e2e-webhook-parent-reader", [_sa(GITOPS_NS, "webhook")], reader_rules)
    admission_file = workdir / "admission-config.yaml"
    admission_file.write_text(yaml.safe_dump(config_mod.to_document(config)))
    webhook_kubeconfig = control_plane.kubeconfig(
        Credentials(token=control_plane.service_account_token(GITOPS_NS, "webhook")),
        workdir / "webhook.kubeconfig",
    )
    webhook = WebhookServer(
        workdir,
        control_plane.webhook_serving_cert(),
        control_plane.webhook_ca.cert_pem,
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
            "GITWARDEN_WEBHOOK_OPA_TIMEOUT": "1.0",
            "GITWARDEN_WEBHOOK_CERT_RELOAD_SECONDS": "0.5",
            "GITWARDEN_WEBHOOK_KUBECONFIG": str(webhook_kubeconfig),
            "GITWARDEN_WEBHOOK_ADMISSION_CONFIG": str(admission_file),
            "GITWARDEN_WEBHOOK_DECISION_CACHE": CHART_DECISION_CACHE,
            **(webhook_env or {}),
        },
    )
    webhook.start()
    _grant(
        admin,
        "e2e-editors",
        [_sa(GITOPS_NS, GITOPS_SA), _user("alice"), _user("oncall")]
        + [
            _sa("kube-system", n)
            for n in (
                "deployment-controller",
                "horizontal-pod-autoscaler",
                "generic-garbage-collector",
            )
        ],
        EDIT,
    )
    alice_creds = control_plane.user_credentials("alice", ("team-a",))
    oncall_creds = control_plane.user_credentials("oncall", (BREAK_GLASS,))
    # GitOps tokens are minted before the webhook guards token requests for that account;
    # with pod-bound tokens, bound to a reconciler pod that exists before the guard too.
    pod = f"{config.pod_name_prefixes[0]}0" if config.require_pod_bound_token else None
    gitops = control_plane.as_service_account(GITOPS_NS, GITOPS_SA, pod=pod)
    control_plane.register_validating_webhook(
        registration.validating_webhook_configuration(config, {"url": webhook.url})
    )
    stack = Stack(
        plane=control_plane,
        opa=opa,
        webhook=webhook,
        gitops=gitops,
        alice=control_plane.client_for(alice_creds),
        alice_creds=alice_creds,
        oncall_creds=oncall_creds,
        workdir=workdir,
    )
    _wait_for_webhook(admin)
    try:
        yield stack
    finally:
        control_plane.delete_validating_webhook(registration.NAME)
        with contextlib.suppress(OSError):  # the webhook's /metrics goes with it: keep it
            canaries.keep("webhook /metrics", _metrics_text(webhook))
        webhook.stop()
        opa.stop()
        # Later tests of the session expect users without these grants.
        revoke(admin, "e2e-editors", "e2e-webhook-parent-reader")


def _metrics_text(webhook: WebhookServer) -> str:
    with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
        f"{webhook.url}/metrics", context=webhook.tls_context(), timeout=5
    ) as resp:
        return str(resp.read().decode())


def _wait_for_webhook(admin: k8s.ApiClient) -> None:
    """The API server loads webhook configurations asynchronously: probe with a dry run."""
    core = k8s.CoreV1Api(admin)

    def denied() -> bool:
        try:
            core.create_namespaced_config_map(
                "default",
                {"metadata": {"name": "probe", "labels": MANAGED}},
                dry_run="All",
            )
        except k8s.ApiException as exc:
            return exc.status == 403 and HOOK in (exc.body or "")
        return False

    wait_until(denied, "the webhook to be called by the API server")


# ------------------------------------------------------------------------------ helpers


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"k": "v"}}


SECRET_VALUE = "hunter2-e2e"


def secret(name: str) -> dict[str, Any]:
    canaries.register(SECRET_VALUE)
    return {
        "metadata": {"name": name, "labels": MANAGED},
        "stringData": {"password": SECRET_VALUE},
    }


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": MANAGED},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def denied_message(call: Callable[[], object], hook: str | tuple[str, ...] = HOOK) -> str:
    """Run an API call that must be denied by our webhook (one of `hook`); its message.

    When two of GitWarden's webhooks both deny, the API server reports whichever answered
    first: such a test names both.
    """
    with pytest.raises(k8s.ApiException) as excinfo:
        call()
    exc = excinfo.value
    assert exc.status == 403, exc.body
    message = str(json.loads(exc.body or "{}")["message"])
    hooks = (hook,) if isinstance(hook, str) else hook
    assert any(f'admission webhook "{h}" denied the request' in message for h in hooks), message
    return message


def create_managed(stack: Stack, namespace: str) -> None:
    """The GitOps identity creates one managed object of each kind."""
    core, apps = k8s.CoreV1Api(stack.gitops), k8s.AppsV1Api(stack.gitops)
    core.create_namespaced_config_map(namespace, configmap("cm", MANAGED))
    core.create_namespaced_secret(namespace, secret("sec"))
    apps.create_namespaced_deployment(namespace, deployment("web"))
