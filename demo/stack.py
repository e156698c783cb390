"""The demo's running environment: control plane, OPA, the webhook, identities and keys.

Owns starting, in order, everything the seven steps need on 127.0.0.1 and registering its
teardown on an `ExitStack` at once, so a failure half way through (or Ctrl-C) stops what did
start: etcd, kube-apiserver and kube-controller-manager (`tests/harness/controlplane.py`), OPA
and the webhook under gunicorn over TLS (`tests/harness/services.py`), the RBAC of the GitOps
identity, of two human users and of two controllers, the registration made by `gitwarden
webhook configuration`, the Sync CRD, and the signers' throwaway keys
(`tests/harness/gitopsrepo.py`). Must not run a step or the reconciler: `demo.steps` and
`demo.driver` do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from demo import commands
from reconciler import status
from tests.harness import controlplane, gitopsrepo, services
from webhook import config as config_mod
from webhook import registration

GITOPS_NS, GITOPS_SA = "gitwarden", "reconciler"
GITOPS_USER = f"system:serviceaccount:{GITOPS_NS}:{GITOPS_SA}"
BREAK_GLASS = "gitwarden:break-glass"
DEVELOPER, ONCALL = "alice", "oncall"
CONTROLLERS = ("deployment-controller", "horizontal-pod-autoscaler")
SYNC_NAME = "demo"
TOKEN_SECONDS = 6 * 3600  # long enough for a KEEP=1 session

_APPLY = ["get", "list", "watch", "create", "patch", "delete"]
# What the reconciler needs for the demo's kinds: server-side apply (get, create, patch),
# prune (delete), metadata lists and, for the loop, watches (drift repair), Events and its
# Lease. Namespaces get no delete (prune keeps them). No escalate or bind.
RECONCILER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": _APPLY[:-1]},
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": _APPLY},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _APPLY},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"],
    },
    {
        "apiGroups": [status.GROUP],
        "resources": [status.PLURAL, f"{status.PLURAL}/status"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
]
# RBAC lets the two people edit apps and config everywhere: only admission stops them.
HUMAN_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]},
    {"apiGroups": [""], "resources": ["namespaces", "events"], "verbs": ["get", "list"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["*"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list"]},
    {"apiGroups": [status.GROUP], "resources": [status.PLURAL], "verbs": ["get", "list"]},
]
CONTROLLER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "deployments/status", "deployments/scale"],
        "verbs": ["get", "update", "patch"],
    },
]


@dataclass
class Stack:
    """Everything the steps drive."""

    workdir: Path
    plane: controlplane.ControlPlane
    opa: services.OpaServer
    webhook: services.WebhookServer
    keys: gitopsrepo.Keys
    admission_file: Path
    kubeconfigs: dict[str, Path]
    credentials: dict[str, controlplane.Credentials]
    ports: list[int] = field(default_factory=list)

    @property
    def admin(self) -> k8s.ApiClient:
        return self.plane.admin()

    def client(self, who: str) -> k8s.ApiClient:
        """An API client for one of the demo's identities (a kubeconfig name)."""
        return self.plane.client_for(self.credentials[who])

    def kubectl(self, who: str, *args: str, editor: str | None = None) -> commands.Result:
        return commands.kubectl(self.kubeconfigs[who], *args, editor=editor, tmp=self.workdir)

    def sync(self) -> dict[str, Any]:
        """The Sync status object (empty until the first pass wrote it)."""
        try:
            found = k8s.CustomObjectsApi(self.admin).get_cluster_custom_object(
                status.GROUP, status.VERSION, status.PLURAL, SYNC_NAME
            )
        except k8s.ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return dict(found) if isinstance(found, dict) else {}

    def opa_running(self) -> bool:
        return self.opa.process is not None and self.opa.process.running()

    def process_ids(self) -> dict[str, int]:
        """Name → pid of every long-running process the stack started."""
        found = {}
        plane = self.plane
        for proc in (plane.etcd, plane.apiserver, plane.controller_manager, self.opa.process,
                     self.webhook.process):  # fmt: skip
            if proc is not None and proc.popen is not None and proc.running():
                found[proc.name] = proc.popen.pid
        return found


def _admission_document(repository_url: str) -> dict[str, Any]:
    # The few keys the demo sets; everything else keeps its default (see docs/configuration.md).
    return {
        "namespace": GITOPS_NS,
        "gitops": {"service_account": GITOPS_SA},
        "repository": {"url": repository_url, "branch": "main"},
        "break_glass": {"groups": [BREAK_GLASS]},
        "cluster_scoped_kinds": [
            {"group": status.GROUP, "kind": status.KIND, "resource": status.PLURAL}
        ],
    }


def start(stack: contextlib.ExitStack, workdir: Path, repository_url: str, say: Any) -> Stack:
    """Start everything; each part's teardown is pushed on `stack` as soon as it runs."""
    plane = controlplane.ControlPlane(workdir=workdir / "cluster")
    plane.workdir.mkdir(parents=True)
    stack.callback(plane.stop)
    say("etcd, kube-apiserver and kube-controller-manager on 127.0.0.1 (a fresh PKI, RBAC)")
    plane.start()
    admin = plane.admin()
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": GITOPS_NS}})

    admission_file = workdir / "admission.yaml"
    admission_file.write_text(yaml.safe_dump(_admission_document(repository_url), sort_keys=False))
    config = config_mod.load(admission_file)
    data = commands.gitwarden("webhook", "opa-data", "--config", str(admission_file))
    _check(data, "gitwarden webhook opa-data")
    opa = services.OpaServer(workdir, json.loads(data.stdout))
    stack.callback(opa.stop)
    say("OPA with policies/admission and the data from `gitwarden webhook opa-data`")
    opa.start()

    kubeconfigs = {"admin": plane.admin_kubeconfig(workdir / "admin.kubeconfig")}
    credentials: dict[str, controlplane.Credentials] = {}
    _grant(
        admin,
        "gitwarden-webhook",
        [_sa(GITOPS_NS, "webhook")],
        registration.webhook_rbac_rules(config),
    )
    _grant(admin, "gitwarden-reconciler", [_sa(GITOPS_NS, GITOPS_SA)], RECONCILER_RULES)
    _grant(admin, "demo-people", [_user(DEVELOPER), _user(ONCALL)], HUMAN_RULES)
    _grant(
        admin, "demo-controllers", [_sa("kube-system", c) for c in CONTROLLERS], CONTROLLER_RULES
    )
    # Tokens of the GitOps account are minted before the webhook guards token requests for it.
    for who, (ns, sa) in {
        "webhook": (GITOPS_NS, "webhook"),
        "gitops": (GITOPS_NS, GITOPS_SA),
        **{c: ("kube-system", c) for c in CONTROLLERS},
    }.items():
        token = plane.service_account_token(ns, sa, expiration_seconds=TOKEN_SECONDS)
        credentials[who] = controlplane.Credentials(token=token)
    credentials[DEVELOPER] = plane.user_credentials(DEVELOPER, ("developers",))
    credentials[ONCALL] = plane.user_credentials(ONCALL, (BREAK_GLASS,))
    for who, creds in credentials.items():
        kubeconfigs[who] = plane.kubeconfig(creds, workdir / f"{who}.kubeconfig")

    client_ca = workdir / "webhook-client-ca.crt"
    client_ca.write_bytes(plane.webhook_client_ca.cert_pem)
    webhook = services.WebhookServer(
        workdir,
        plane.webhook_serving_cert(),
        plane.webhook_ca.cert_pem,
        env={
            "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
            "GITWARDEN_WEBHOOK_KUBECONFIG": str(kubeconfigs["webhook"]),
            "GITWARDEN_WEBHOOK_ADMISSION_CONFIG": str(admission_file),
            # Only the API server (its client certificate) may ask for decisions.
            "GITWARDEN_WEBHOOK_CLIENT_CA": str(client_ca),
            # The chart's decision cache, against an OPA locked as the chart runs it.
            "GITWARDEN_WEBHOOK_DECISION_CACHE": services.CHART_DECISION_CACHE,
        },
    )
    stack.callback(webhook.stop)
    say("the webhook: gunicorn over TLS, answering only the API server's client certificate")
    webhook.start()
    ca_bundle = workdir / "webhook-ca.crt"
    ca_bundle.write_bytes(plane.webhook_ca.cert_pem)
    registered = commands.gitwarden(
        "webhook",
        "configuration",
        "--config",
        str(admission_file),
        "--url",
        webhook.url,
        "--ca-bundle",
        str(ca_bundle),
    )
    _check(registered, "gitwarden webhook configuration")
    (workdir / "webhook-configuration.yaml").write_text(registered.stdout)
    plane.register_validating_webhook(yaml.safe_load(registered.stdout))
    _wait_for_webhook(admin)

    crd = commands.gitwarden(
        "status", "--install-crd", "--kubeconfig", str(kubeconfigs["admin"]), "--name", SYNC_NAME
    )
    if "installed CustomResourceDefinition" not in crd.stderr:
        raise RuntimeError(f"gitwarden status --install-crd: {crd.output.strip()}")
    say("the signers' throwaway keys: SSH (ssh-keygen) and OpenPGP (gpg), and the trust files")
    keys = gitopsrepo.make_keys(workdir / "keys")
    stack.callback(keys.stop_agents)
    ports = [plane.port, opa.port, webhook.port, *_etcd_ports(plane)]
    return Stack(
        workdir, plane, opa, webhook, keys, admission_file, kubeconfigs, credentials, ports
    )


def _etcd_ports(plane: controlplane.ControlPlane) -> list[int]:
    """etcd's client and peer ports and kube-controller-manager's, from their command lines."""
    found = []
    for proc in (plane.etcd, plane.controller_manager):
        for arg in proc.argv if proc is not None else ():
            if arg.startswith(("--listen-client-urls=", "--listen-peer-urls=", "--secure-port=")):
                found.append(int(arg.rsplit(":", 1)[-1].rsplit("=", 1)[-1]))
    return found


def _check(done: commands.Result, what: str) -> None:
    if done.code != 0:
        raise RuntimeError(f"{what} failed (exit {done.code}): {done.stderr.strip()}")


def _grant(
    admin: k8s.ApiClient, name: str, subjects: list[dict[str, str]], rules: list[Any]
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": subjects,
        }
    )


def _user(name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}


def _sa(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "namespace": namespace, "name": name}


def _wait_for_webhook(admin: k8s.ApiClient, timeout: float = 30) -> None:
    """The API server loads webhook configurations asynchronously: probe with a dry run."""
    core = k8s.CoreV1Api(admin)
    probe = {"metadata": {"name": "probe", "labels": {"gitwarden.dev/managed": "true"}}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.create_namespaced_config_map("default", probe, dry_run="All")
        except k8s.ApiException as exc:
            if exc.status == 403 and "gitwarden" in (exc.body or ""):
                return
        time.sleep(0.2)
    raise RuntimeError("the API server did not start calling the webhook within 30 s")


def combined_kubeconfig(stack: Stack, path: Path) -> Path:
    """One kubeconfig with a context per identity (admin current), for KEEP=1 users."""
    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
    }
    for who in ("admin", DEVELOPER, ONCALL, "gitops"):
        single = yaml.safe_load(stack.kubeconfigs[who].read_text())
        if not merged["clusters"]:
            merged["clusters"] = [{"name": "demo", "cluster": single["clusters"][0]["cluster"]}]
        merged["users"].append({"name": who, "user": single["users"][0]["user"]})
        merged["contexts"].append({"name": who, "context": {"cluster": "demo", "user": who}})
    merged["current-context"] = "admin"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def secret_value(admin: k8s.ApiClient, namespace: str, name: str, key: str) -> str | None:
    """One value of a live Secret, decoded (None if the Secret or key is missing)."""
    try:
        secret = k8s.CoreV1Api(admin).read_namespaced_secret(name, namespace)
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw = (secret.data or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()
