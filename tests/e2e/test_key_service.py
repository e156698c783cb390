"""`gitwarden keys serve` against the real API server: a key is made, served, renewed, kept."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from reconciler import manifests
from reconciler.sealed import keys, objects
from reconciler.services import certserver, keyservice, kube_keys
from tests.harness.controlplane import LOOPBACK, ControlPlane, Credentials, Process, free_port
from tests.integration import kubeseal_tool

pytestmark = pytest.mark.cluster


def _fetch(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback URL built here
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        return None
    except OSError:
        return None


def _wait_for(check, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (value := check()) is None or value is False:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def _key_secrets(admin: k8s.ApiClient, namespace: str) -> list[str]:
    listed = k8s.CoreV1Api(admin).list_namespaced_secret(
        namespace, label_selector=f"{kube_keys.KEY_LABEL}={kube_keys.ACTIVE}"
    )
    return sorted(str(s.metadata.name) for s in listed.items)


def test_key_service_makes_serves_and_renews_keys(
    control_plane: ControlPlane, admin: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """No key: one is made and served; when due, a new one is served and the old one kept."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "keys"},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "keys"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "keys"},
            "subjects": [{"kind": "ServiceAccount", "namespace": namespace, "name": "keys"}],
        },
    )
    kubeconfig = control_plane.kubeconfig(
        Credentials(token=control_plane.service_account_token(namespace, "keys")),
        tmp_path / "kubeconfig",
    )
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/v1/cert.pem"
    # 0.0001 days is 8.6 s: the first key is made at start, the second once that has passed.
    service = Process(
        "keys",
        [
            sys.executable,
            "-m",
            "gitwarden_cli.main",
            "keys",
            "serve",
            f"--namespace={namespace}",
            f"--kubeconfig={kubeconfig}",
            f"--listen={LOOPBACK}:{port}",
            "--renew-days=0.0001",
            "--check-every=1",
        ],
        tmp_path / "keys.log",
    )
    service.start()
    try:
        first = _wait_for(lambda: _fetch(url), "the first certificate")
        assert first.startswith(b"-----BEGIN CERTIFICATE-----")
        assert len(_key_secrets(admin, namespace)) == 1

        # Seal with the real kubeseal against the served certificate; the cluster's keys open it.
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": namespace},
            "stringData": {"password": "served-cert-e2e"},
        }
        sealed = yaml.safe_load(
            kubeseal_tool.run(
                ["--cert", url, "--format", "yaml"], yaml.safe_dump(secret).encode(), tmp_path
            )
        )

        second = _wait_for(
            lambda: (cert := _fetch(url)) is not None and cert != first and cert, "renewal", 120
        )
        assert second != first
        time.sleep(2.5)  # two more checks: the new key is not due, nothing else is made
        assert len(_key_secrets(admin, namespace)) == 2  # the old key is kept for decryption
        ring = kube_keys.read_ring(admin, namespace)
        opened = objects.unseal(sealed, objects.KeyChooser(ring, manifests.KeyHints()))
        assert opened.data["password"].reveal() == b"served-cert-e2e"
    finally:
        service.stop()
    assert service.popen is not None
    assert service.popen.returncode == 0, service.log_tail()
    log = service.log_path.read_text()
    assert "is now served" in log
    assert "BEGIN" not in log


def test_a_standby_only_reads_keys_and_makes_one_as_soon_as_it_leads(
    admin: k8s.ApiClient, namespace: str
) -> None:
    """Every replica serves the certificate; only the leader makes keys, and a new leader
    makes a due key at once rather than after check_every."""
    leading = threading.Event()
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/v1/cert.pem"
    settings = keyservice.Settings(
        namespace=namespace,
        listen=certserver.Settings(LOOPBACK, port),
        check_every=3600,  # only the standby's shorter look and the leadership wake-up remain
        policy=keys.KeyPolicy(renew_period=dt.timedelta(days=30)),
    )
    service = keyservice.KeyService(admin, settings, leading=leading.is_set)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=service.run, args=(stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        time.sleep(1.0)  # more than one leadership poll: still a standby, still nothing made
        assert _key_secrets(admin, namespace) == []
        assert _fetch(url) is None  # 503: no certificate yet, and the standby will not make one

        # Another replica leads and makes the key: the standby reads it back, never writes.
        made = keyservice.KeyService(admin, settings).refresh()
        assert len(_key_secrets(admin, namespace)) == 1
        assert service.refresh().newest().fingerprint == made.newest().fingerprint
        assert _fetch(url) == made.newest().certificate_pem()
        assert len(_key_secrets(admin, namespace)) == 1

        # The key Secrets vanish (a new cluster, say) and this replica becomes the leader.
        for name in _key_secrets(admin, namespace):
            k8s.CoreV1Api(admin).delete_namespaced_secret(name, namespace)
        leading.set()
        _wait_for(lambda: len(_key_secrets(admin, namespace)) == 1, "the new leader's key", 10)
        fresh = _wait_for(
            lambda: (cert := _fetch(url)) not in (None, made.newest().certificate_pem()) and cert,
            "the new leader's certificate",
            10,
        )
        assert fresh.startswith(b"-----BEGIN CERTIFICATE-----")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
