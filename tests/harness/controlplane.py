"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

Owns starting and stopping the three processes on 127.0.0.1 (no nodes, no scheduler: Pods stay
Pending, but garbage collection, namespace deletion, the workload controllers, the `default`
ServiceAccount and `kube-root-ca.crt` are real; tests/harness/controllers.py says which
controllers run), the PKI they use, and clients that act as the admin, as a human user (client
certificate) or as a service account (TokenRequest token, optionally bound to a Pod). It never
substitutes a fake: when a binary is missing it raises `MissingTool` and the caller fails loudly.

Orphans: every child is a tests.harness.processes `Process` (own process group, PR_SET_PDEATHSIG),
so even a SIGKILLed test runner takes every control-plane process with it; `stop()` (also run
from atexit) terminates the groups, then kills what is left.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from tests.harness import controllers, pki
from tests.harness.processes import (
    LOOPBACK,
    REPO_ROOT,
    START_TIMEOUT,
    MissingTool,
    Process,
    StartError,
    free_port,
    tool,
    tools_bin,
    wait_for,
    wait_http,
)

# Re-exported: tests and benches import the process machinery from here too.
__all__ = [
    "LOOPBACK",
    "REPO_ROOT",
    "START_TIMEOUT",
    "ControlPlane",
    "Credentials",
    "MissingTool",
    "Process",
    "StartError",
    "free_port",
    "running_control_plane",
    "tool",
    "tools_bin",
    "wait_for",
    "wait_http",
]


@dataclass(frozen=True)
class Credentials:
    """How one identity authenticates: a client certificate or a bearer token."""

    cert: pki.KeyPair | None = None
    token: str | None = None


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, RBAC and webhooks on."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gitwarden-cp-")))
    etcd: Process | None = None
    apiserver: Process | None = None
    controller_manager: Process | None = None
    port: int = 0
    _cleanup_dir: bool = True

    def __post_init__(self) -> None:
        self.serving_ca = pki.CertificateAuthority("gitwarden-test-serving-ca")
        self.client_ca = pki.CertificateAuthority("gitwarden-test-client-ca")
        self.webhook_ca = pki.CertificateAuthority("gitwarden-test-webhook-ca")
        # The API server presents a certificate from this CA to every webhook that asks for
        # one (WebhookAdmission kubeConfigFile, user "*"); webhooks that ask for none see none.
        self.webhook_client_ca = pki.CertificateAuthority("gitwarden-test-webhook-client-ca")
        self._sa_key = pki.signing_key()
        self.ca_file = self.workdir / "serving-ca.crt"
        self._admin = self.client_ca.client("admin", ("system:masters",))

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """The API server's base URL."""
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start etcd, kube-apiserver, then the controllers; return once they all work."""
        # Every binary first: a missing one fails before anything is started.
        etcd_bin, apiserver_bin = tool("etcd"), tool("kube-apiserver")
        kcm_bin = tool("kube-controller-manager")
        atexit.register(self.stop)
        self.ca_file.write_bytes(self.serving_ca.cert_pem)
        serving_crt, serving_key = self.serving_ca.serving(["localhost", LOOPBACK]).write(
            self.workdir, "apiserver"
        )
        client_ca = self.workdir / "client-ca.crt"
        client_ca.write_bytes(self.client_ca.cert_pem)
        audit_policy = self.workdir / "audit-policy.yaml"
        # Metadata level records who did what and every admission webhook's audit annotations.
        # The controllers' own reads (informer lists and watches, many a second) are left out:
        # every one of their writes is kept, and the log stays small enough to read per test.
        audit_policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n"
            "- level: None\n  verbs: [get, list, watch]\n"
            f"  users: [{controllers.USER}]\n"
            "- level: None\n  verbs: [get, list, watch]\n"
            "  userGroups: [system:serviceaccounts:kube-system]\n"
            "- level: Metadata\n"
        )
        admission_config = self._write_admission_config()
        sa_pub, sa_key = self.workdir / "sa.pub", self.workdir / "sa.key"
        sa_pub.write_bytes(pki.public_key_pem(self._sa_key))
        sa_key.touch(mode=0o600)
        sa_key.write_bytes(pki.key_pem(self._sa_key))

        etcd_port, peer_port = free_port(), free_port()
        etcd_url, peer_url = f"http://{LOOPBACK}:{etcd_port}", f"http://{LOOPBACK}:{peer_port}"
        self.etcd = Process(
            "etcd",
            [
                str(etcd_bin),
                "--name=gitwarden-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=gitwarden-test={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self.etcd.start()
        wait_http(self.etcd, f"{etcd_url}/health")

        self.port = free_port()
        self.apiserver = Process(
            "kube-apiserver",
            [
                str(apiserver_bin),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={serving_crt}",
                f"--tls-private-key-file={serving_key}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--client-ca-file={client_ca}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=ValidatingAdmissionWebhook,MutatingAdmissionWebhook",
                f"--admission-control-config-file={admission_config}",
                # The ServiceAccount plugin stays on (its default): the controller manager
                # creates the `default` account it gives Pods that name none.
                f"--service-account-issuer=https://{LOOPBACK}:{self.port}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                "--v=1",
            ],
            self.workdir / "kube-apiserver.log",
        )
        self.apiserver.start()
        wait_http(self.apiserver, f"{self.url}/readyz", context=self._tls_context())
        self._wait_for_default_namespace()
        self._start_controller_manager(kcm_bin, sa_key)

    def _start_controller_manager(self, binary: Path, sa_key: Path) -> None:
        """kube-controller-manager as kubeadm runs it; see tests/harness/controllers.py."""
        cert = self.client_ca.client(controllers.USER)
        kubeconfig = controllers.kubeconfig(
            self.url, self.serving_ca.cert_pem, cert, self.workdir / "controller-manager.conf"
        )
        port = free_port()
        serving = self.serving_ca.serving([LOOPBACK, "localhost"]).write(
            self.workdir, "controller-manager"
        )
        self.controller_manager = Process(
            "kube-controller-manager",
            controllers.argv(
                binary,
                kubeconfig_path=kubeconfig,
                port=port,
                serving=serving,
                root_ca=self.ca_file,
                client_ca=self.workdir / "client-ca.crt",
                sa_key=sa_key,
                cert_dir=self.workdir / "controller-manager-certs",
            ),
            self.workdir / "kube-controller-manager.log",
        )
        self.controller_manager.start()
        wait_http(
            self.controller_manager,
            f"https://{LOOPBACK}:{port}/healthz",
            context=self._tls_context(),
        )
        admin = self.admin()
        wait_for(
            self.controller_manager,
            lambda: controllers.controllers_working(admin),
            "the default ServiceAccount and kube-root-ca.crt in namespace default",
        )

    def _write_admission_config(self) -> Path:
        """The AdmissionConfiguration giving the webhook plugins a client certificate."""
        client = self.webhook_client_ca.client("kube-apiserver-webhook-client")
        kubeconfig = self.workdir / "webhook-client.kubeconfig"
        kubeconfig.touch(mode=0o600)
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "users": [
                        {
                            "name": "*",
                            "user": {
                                "client-certificate-data": base64.b64encode(
                                    client.cert_pem
                                ).decode(),
                                "client-key-data": base64.b64encode(client.key_pem).decode(),
                            },
                        }
                    ],
                }
            )
        )
        plugin = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        path = self.workdir / "admission-control.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "AdmissionConfiguration",
                    "plugins": [
                        {"name": name, "configuration": plugin}
                        for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
                    ],
                }
            )
        )
        return path

    def stop(self) -> None:
        """Stop the controllers, kube-apiserver, then etcd; remove the work directory."""
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()
        if self._cleanup_dir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self) -> float:
        """Stop kube-apiserver and start it again on its port and etcd; seconds it was away."""
        assert self.apiserver is not None, "not started"
        began = time.monotonic()
        self.apiserver.stop()
        self.apiserver.start()
        wait_http(self.apiserver, f"{self.url}/readyz", context=self._tls_context())
        return time.monotonic() - began

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines, Metadata level)."""
        return self.workdir / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event written so far."""
        if not self.audit_log.exists():
            return []
        with self.audit_log.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def pids(self) -> list[int]:
        """PIDs of the running control-plane processes (for orphan checks)."""
        procs = (self.etcd, self.apiserver, self.controller_manager)
        return [p.popen.pid for p in procs if p and p.popen and p.running()]

    def save_logs(self, directory: Path) -> list[Path]:
        """Copy every process log and the audit log to `directory` (kept after `stop()`)."""
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for log in sorted(self.workdir.glob("*.log")):
            saved.append(Path(shutil.copy2(log, directory / log.name)))
        return saved

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _wait_for_default_namespace(self) -> None:
        api = k8s.CoreV1Api(self.admin())
        deadline = time.monotonic() + 30
        while True:
            try:
                api.read_namespace("default")
            except k8s.ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            else:
                return

    # ------------------------------------------------------------------------------ clients

    def client_for(self, creds: Credentials) -> k8s.ApiClient:
        """An API client that authenticates with the given credentials."""
        cfg = k8s.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_file)
        if creds.cert is not None:
            cfg.cert_file, cfg.key_file = (
                str(p) for p in creds.cert.write(Path(tempfile.mkdtemp(dir=self.workdir)), "client")
            )
        if creds.token is not None:
            cfg.api_key = {"authorization": f"Bearer {creds.token}"}
        return k8s.ApiClient(cfg)

    def admin(self) -> k8s.ApiClient:
        """A client for `admin` in `system:masters` (bypasses RBAC, not admission)."""
        return self.client_for(Credentials(cert=self._admin))

    def user_credentials(self, user: str, groups: tuple[str, ...] = ()) -> Credentials:
        """Client-certificate credentials for a human user: CN = user, O = groups."""
        return Credentials(cert=self.client_ca.client(user, groups))

    def as_user(self, user: str, groups: tuple[str, ...] = ()) -> k8s.ApiClient:
        """A client acting as a human user with a client certificate."""
        return self.client_for(self.user_credentials(user, groups))

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        pod: str | None = None,
        expiration_seconds: int = 3600,
    ) -> str:
        """A TokenRequest token for `namespace/name`; creates the service account if needed.

        With `pod`, the token is bound to that Pod (created if missing, running as the service
        account), so the API server adds `authentication.kubernetes.io/pod-name` to userInfo.
        """
        core = k8s.CoreV1Api(self.admin())
        with contextlib.suppress(k8s.ApiException):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        spec: dict[str, Any] = {"audiences": [], "expirationSeconds": expiration_seconds}
        if pod is not None:
            uid = self._ensure_pod(core, namespace, pod, name)
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        result = core.create_namespaced_service_account_token(name, namespace, body)
        return str(result.status.token)

    @staticmethod
    def _ensure_pod(core: k8s.CoreV1Api, namespace: str, pod: str, service_account: str) -> str:
        manifest = {
            "metadata": {"name": pod},
            "spec": {
                "serviceAccountName": service_account,
                "automountServiceAccountToken": False,
                "containers": [{"name": "main", "image": "registry.invalid/none:0"}],
            },
        }
        try:
            created = core.create_namespaced_pod(namespace, manifest)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
            created = core.read_namespaced_pod(pod, namespace)
        return str(created.metadata.uid)

    def as_service_account(
        self, namespace: str, name: str, *, pod: str | None = None
    ) -> k8s.ApiClient:
        """A client acting as a service account through a TokenRequest token."""
        return self.client_for(
            Credentials(token=self.service_account_token(namespace, name, pod=pod))
        )

    def kubeconfig(self, creds: Credentials, path: Path) -> Path:
        """Write a kubeconfig for `kubectl` that authenticates with `creds`; return its path."""
        user: dict[str, str] = {}
        if creds.cert is not None:
            user["client-certificate-data"] = base64.b64encode(creds.cert.cert_pem).decode()
            user["client-key-data"] = base64.b64encode(creds.cert.key_pem).decode()
        if creds.token is not None:
            user["token"] = creds.token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(
                            self.serving_ca.cert_pem
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    def admin_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for the admin user."""
        return self.kubeconfig(Credentials(cert=self._admin), path)

    # ----------------------------------------------------------------------------- webhooks

    def webhook_serving_cert(self) -> pki.KeyPair:
        """A serving certificate for a webhook on 127.0.0.1, signed by `webhook_ca`."""
        return self.webhook_ca.serving([LOOPBACK, "localhost"])

    def register_validating_webhook(self, configuration: dict[str, Any]) -> None:
        """Create or replace a ValidatingWebhookConfiguration.

        Each webhook whose clientConfig has a `url` gets `webhook_ca` as its caBundle unless one
        is set. The API server picks configurations up asynchronously; callers probe before
        they assert.
        """
        api = k8s.AdmissionregistrationV1Api(self.admin())
        bundle = base64.b64encode(self.webhook_ca.cert_pem).decode()
        for hook in configuration.get("webhooks", []):
            hook.setdefault("clientConfig", {}).setdefault("caBundle", bundle)
        name = configuration["metadata"]["name"]
        try:
            api.create_validating_webhook_configuration(configuration)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
            current = api.read_validating_webhook_configuration(name)
            configuration["metadata"]["resourceVersion"] = current.metadata.resource_version
            api.replace_validating_webhook_configuration(name, configuration)

    def delete_validating_webhook(self, name: str) -> None:
        """Delete a ValidatingWebhookConfiguration if it exists."""
        api = k8s.AdmissionregistrationV1Api(self.admin())
        try:
            api.delete_validating_webhook_configuration(name)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise


@contextlib.contextmanager
def running_control_plane() -> Iterator[ControlPlane]:
    """Start a control plane, yield it, and always stop it (also on errors and Ctrl-C)."""
    plane = ControlPlane()
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
