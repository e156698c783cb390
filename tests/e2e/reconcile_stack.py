"""What the reconcile end-to-end tests share: the GitOps identity, the webhook, keys, the runner.

Owns the GitOps service account's RBAC (a ClusterRole of exactly what `gitwarden reconcile`
needs for the test kinds: apply, prune, its status object and the sealing keys, plus a Role for
its Lease in GitWarden's namespace; the chart's roles will start from them), its kubeconfig (a
TokenRequest token, so the reconciler runs *as* `system:serviceaccount:gitwarden:reconciler`),
the admission stack with the Sync status kind guarded, a sealing key Secret in GitWarden's
namespace, and running the real CLI as a child process. Nothing here is faked.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s

from reconciler import controlconfig, status
from reconciler.sealed import objects
from reconciler.services import kube_keys
from tests import sealed_keys
from tests.e2e import webhook_stack
from tests.harness import canaries, gitopsrepo
from tests.harness.controlplane import ControlPlane, Credentials, tool
from webhook import config as config_mod

GITOPS_USER = f"system:serviceaccount:{webhook_stack.GITOPS_NS}:{webhook_stack.GITOPS_SA}"
SYNC_GROUP, SYNC_VERSION, SYNC_PLURAL, SYNC_KIND = (
    status.GROUP,
    status.VERSION,
    status.PLURAL,
    status.KIND,
)
WIDGET_GROUP = "e2e.gitwarden.dev"
ROLE = "gitwarden-reconciler"
ADMISSION = config_mod.AdmissionConfig(
    namespace=webhook_stack.GITOPS_NS,
    gitops_service_account=webhook_stack.GITOPS_SA,
    repository_url=webhook_stack.REPO,
    break_glass_groups=(webhook_stack.BREAK_GLASS,),
    cluster_scoped_kinds=(config_mod.ClusterKind(SYNC_GROUP, SYNC_KIND, SYNC_PLURAL),),
)

_APPLY = ["get", "list", "watch", "create", "patch", "delete"]
# Least privilege for what the tests' repositories hold and what a pass and drift repair do
# (the audit log shows it: GET, LIST, WATCH of the managed kinds by label, server-side apply
# as PATCH, which needs `create` for a new object, and DELETE for prune; no update). No
# `escalate` or `bind`: the Roles in Git grant only what this role already holds, which
# RBAC then allows.
# Namespaces and CRDs get no `delete` (prune keeps them unless annotated, and these tests
# never annotate one). Secrets are cluster-wide because SealedSecrets open into any namespace;
# that also covers reading the key ring in GitWarden's namespace.
RECONCILER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": _APPLY[:-1]},
    {"apiGroups": [""], "resources": ["configmaps", "secrets", "services"], "verbs": _APPLY},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _APPLY},
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings", "clusterroles"],
        "verbs": _APPLY,
    },
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": _APPLY[:-1],
    },
    {"apiGroups": [WIDGET_GROUP], "resources": ["widgets"], "verbs": _APPLY},
    {
        "apiGroups": [SYNC_GROUP],
        "resources": [SYNC_PLURAL, f"{SYNC_PLURAL}/status"],
        "verbs": ["get", "create", "patch"],
    },
]

EVENTS_NAMESPACE = "default"
EVENT_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


# Leader election, in GitWarden's namespace only (a Role, not the ClusterRole): read and renew
# exactly the one Lease by name. `create` cannot be limited by resourceNames (the name of an
# object that does not exist yet is not known to the authorizer), so it is allowed for any
# Lease in that namespace: the worst it allows is an extra Lease there. No list, watch, patch
# or delete.
LEASE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [controlconfig.DEFAULT_LEASE],
        "verbs": ["get", "update"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]


@dataclass
class Env:
    """The running stack plus what every reconcile test needs."""

    stack: webhook_stack.Stack
    keys: gitopsrepo.Keys
    kubeconfig: Path
    cert: Path
    workdir: Path

    @property
    def admin(self) -> k8s.ApiClient:
        return self.stack.plane.admin()

    def repo(self) -> gitopsrepo.GitOpsRepo:
        """A fresh signed repository (its own trust anchor)."""
        return gitopsrepo.create(self.workdir / f"repo-{uuid.uuid4().hex[:8]}", self.keys)

    def config(self, repo: gitopsrepo.GitOpsRepo, name: str, **apply: Any) -> Path:
        """A reconciler config for `repo` whose Sync object is `name`."""
        return gitopsrepo.write_config(
            self.workdir / f"{name}.yaml",
            repo,
            name=name,
            kubeconfig=self.kubeconfig,
            cache_dir=self.workdir / f"cache-{name}",
            opa=tool("opa"),
            apply=apply,
        )

    def reconcile(self, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """`gitwarden reconcile --config F --once [extra]` as a child process."""
        return run_cli("reconcile", "--config", str(config), "--once", *extra)

    def seal(
        self, namespace: str, name: str, values: Mapping[str, str], *, cli: bool = False
    ) -> dict[str, Any]:
        """A SealedSecret for the cluster's sealing certificate.

        With `cli`, made by the `gitwarden seal` command; otherwise by the same library call in
        process (`reconciler.sealed.objects.seal`), which saves a Python start per Secret.
        """
        canaries.register(*values.values())  # the suite's last module scans for them
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": dict(values),
        }
        if not cli:
            certificate = x509.load_pem_x509_certificate(self.cert.read_bytes())
            return objects.seal(secret, certificate, dt.datetime.now(dt.UTC))
        done = run_cli("seal", "--cert", str(self.cert), stdin=yaml.safe_dump(secret))
        assert done.returncode == 0, done.stderr
        sealed: dict[str, Any] = yaml.safe_load(done.stdout)
        return sealed

    def sync(self, name: str) -> dict[str, Any]:
        """The Sync status object, read by the admin."""
        found = k8s.CustomObjectsApi(self.admin).get_cluster_custom_object(
            SYNC_GROUP, SYNC_VERSION, SYNC_PLURAL, name
        )
        assert isinstance(found, dict)
        return found

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        """One kstatus condition of Sync `name` (Ready, Reconciling, Stalled)."""
        for cond in self.sync(name).get("status", {}).get("conditions", []):
            if cond["type"] == kind:
                return dict(cond)
        raise AssertionError(f"Sync {name} has no {kind} condition: {self.sync(name)}")

    def kubectl(
        self, creds: Credentials | None, *args: str, editor: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as `creds` (None: the admin); `editor` is what `kubectl edit` runs."""
        path = self.workdir / f"kc-{uuid.uuid4().hex}"
        plane = self.stack.plane
        kubeconfig = (
            plane.admin_kubeconfig(path) if creds is None else plane.kubeconfig(creds, path)
        )
        # kubectl edit keeps a failed edit in TMPDIR: keep it in the test's directory.
        env = {**os.environ, "KUBECTL_KUBERC": "false", "TMPDIR": str(self.workdir)}
        if editor is not None:
            env["KUBE_EDITOR"] = editor
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )


def denied_by_gitwarden(call: Callable[[], object]) -> str:
    """Run an API call GitWarden's webhook must deny; return the denial message.

    The Sync object is guarded twice (it carries the managed label, and its kind is a guarded
    cluster-scoped kind here): either webhook's denial counts.
    """
    with pytest.raises(k8s.ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value.body
    message = str(json.loads(caught.value.body or "{}")["message"])
    hooks = r'admission webhook "(managed|cluster-kinds)\.gitwarden\.gitwarden\.dev" denied'
    assert re.search(hooks, message), message
    return message


def assert_never_denied(env: Env, since: dt.datetime, provoked: str | None = None) -> None:
    """No request of the GitOps identity since `since` was refused, by RBAC or admission.

    `provoked` names the prefix of objects a test made the API server refuse on purpose.
    """
    events = [
        e
        for e in env.stack.plane.audit_events()
        if (e.get("user") or {}).get("username") == GITOPS_USER
        and dt.datetime.fromisoformat(e["requestReceivedTimestamp"]) >= since
    ]
    writes = [e for e in events if e["verb"] in ("create", "patch", "update", "delete")]
    assert writes, "no write by the GitOps identity was audited: the check would prove nothing"

    def refused(event: dict[str, Any]) -> bool:
        name = str((event.get("objectRef") or {}).get("name", ""))
        if provoked and name.startswith(provoked):
            return False
        annotations = (event.get("annotations") or {}).values()
        return bool(
            (event.get("responseStatus") or {}).get("code") == 403
            or any("denied" in str(value) for value in annotations)
        )

    assert [
        (e["verb"], e.get("objectRef"), e.get("responseStatus")) for e in events if refused(e)
    ] == []


def started_now() -> dt.datetime:
    """A module's start, for audit queries (one second of slack for the log's clock)."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)


def unique(prefix: str) -> str:
    """A name no other test uses (namespaces, Sync objects)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """An applied pass: exit 0; returns its stdout (the ChangeSet)."""
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """A refused pass: exit 1 with the reason on the output; returns stdout and stderr."""
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The installed `gitwarden` command, as an operator runs it (no traceback may escape)."""
    done = subprocess.run(
        [sys.executable, "-m", "gitwarden_cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    canaries.keep(f"gitwarden {args[0]} output", done.stdout + done.stderr)
    return done


@contextlib.contextmanager
def reconciler_role(admin: k8s.ApiClient) -> Iterator[None]:
    """The ClusterRole above and the Lease Role, bound to the GitOps service account only."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    role = {"metadata": {"name": ROLE}, "rules": RECONCILER_RULES}
    binding = {
        "metadata": {"name": ROLE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "namespace": webhook_stack.GITOPS_NS,
                "name": webhook_stack.GITOPS_SA,
            }
        ],
    }
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)
    # The loop's Events about the cluster-scoped Sync object go to `default` (the only
    # namespace the API server accepts for them): create there, and nothing else.
    events_role = {"metadata": {"name": ROLE}, "rules": EVENT_RULES}
    events_binding = {
        "metadata": binding["metadata"],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
        "subjects": binding["subjects"],
    }
    rbac.create_namespaced_role(EVENTS_NAMESPACE, events_role)
    rbac.create_namespaced_role_binding(EVENTS_NAMESPACE, events_binding)
    namespace = webhook_stack.GITOPS_NS
    rbac.create_namespaced_role(namespace, {"metadata": {"name": ROLE}, "rules": LEASE_RULES})
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE}
    lease_binding = {**binding, "roleRef": role_ref}
    rbac.create_namespaced_role_binding(namespace, lease_binding)
    try:
        yield
    finally:
        rbac.delete_namespaced_role_binding(ROLE, namespace)
        rbac.delete_namespaced_role(ROLE, namespace)
        rbac.delete_namespaced_role_binding(ROLE, EVENTS_NAMESPACE)
        rbac.delete_namespaced_role(ROLE, EVENTS_NAMESPACE)
        rbac.delete_cluster_role_binding(ROLE)
        rbac.delete_cluster_role(ROLE)


def gitops_kubeconfig(plane: ControlPlane, stack: webhook_stack.Stack, path: Path) -> Path:
    """A kubeconfig holding the stack's GitOps token.

    The stack mints it before the webhook guards token requests for the GitOps account: a
    token minted here, after the guard, is denied (as it should be).
    """
    header = str(stack.gitops.configuration.api_key["authorization"])
    return plane.kubeconfig(Credentials(token=header.removeprefix("Bearer ")), path)


@contextlib.contextmanager
def sealing_key(admin: k8s.ApiClient, workdir: Path) -> Iterator[Path]:
    """A controller-style key Secret in GitWarden's namespace; yields its certificate file."""
    key = sealed_keys.sealing_key(2048, 7)
    name = f"sealed-secrets-key{key.fingerprint[:8]}"
    body = {
        "metadata": {"name": name, "labels": {kube_keys.KEY_LABEL: kube_keys.ACTIVE}},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(key.certificate_pem()).decode(),
            "tls.key": base64.b64encode(key.private_key_pem()).decode(),
        },
    }
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_secret(webhook_stack.GITOPS_NS, body)
    cert = workdir / "sealing.crt"
    cert.write_bytes(key.certificate_pem())
    try:
        yield cert
    finally:
        core.delete_namespaced_secret(name, webhook_stack.GITOPS_NS)


@contextlib.contextmanager
def allowed_everything(admin: k8s.ApiClient, user: str) -> Iterator[None]:
    """RBAC lets `user` do anything while inside, so only admission can stop them."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    name = f"e2e-everything-{user}"
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )
    try:
        yield
    finally:
        rbac.delete_cluster_role_binding(name)


def install_sync_crd(plane: ControlPlane, workdir: Path) -> None:
    """The operator's set-up step: `gitwarden status --install-crd` as the admin."""
    kubeconfig = plane.admin_kubeconfig(workdir / "admin.kubeconfig")
    done = run_cli("status", "--install-crd", "--kubeconfig", str(kubeconfig), "--name", "none")
    assert "no Sync object" in done.stderr, done.stdout + done.stderr
    crd = k8s.ApiextensionsV1Api(plane.admin()).read_custom_resource_definition(
        f"{SYNC_PLURAL}.{SYNC_GROUP}"
    )
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)


@contextlib.contextmanager
def running_env(
    plane: ControlPlane,
    admin: k8s.ApiClient,
    workdir: Path,
    webhook_env: dict[str, str] | None = None,
) -> Iterator[Env]:
    """The admission stack, the GitOps identity, a sealing key and the Sync CRD.

    The GitOps identity's ClusterRole and the key Secret are removed on exit, so later modules
    see neither; the CRD stays (it is the product's, and removing it would wait on every Sync).
    """
    with (
        webhook_stack.running_stack(plane, admin, workdir, ADMISSION, webhook_env) as stack,
        reconciler_role(admin),
        sealing_key(admin, workdir) as cert,
    ):
        install_sync_crd(plane, workdir)
        keys = gitopsrepo.make_keys(workdir / "keys")
        try:
            yield Env(
                stack=stack,
                keys=keys,
                kubeconfig=gitops_kubeconfig(plane, stack, workdir / "gitops.kubeconfig"),
                cert=cert,
                workdir=workdir,
            )
        finally:
            keys.stop_agents()
