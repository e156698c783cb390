"""kube-controller-manager for the test control plane: the cluster's own controllers, for real.

Owns the controller manager's command line, its credentials and its readiness. It runs as
kubeadm runs it: a client certificate with CN `system:kube-controller-manager` (the bootstrap
RBAC role of that name grants what it needs), `--use-service-account-credentials` so every
controller acts as its own `system:serviceaccount:kube-system:<controller>` (the identities the
webhook's allowances name), the service-account signing key the API server verifies with, and
the serving CA as the root CA it publishes as `kube-root-ca.crt`. It must not grant anything
beyond the bootstrap policy, and must not start a controller that needs nodes or a cloud.

Controllers: `*` (every controller on by default). What stays off, and why:
* `bootstrap-signer-controller`, `token-cleaner-controller`: off in `*` by design (kubeadm
  turns them on for node join tokens; there are no nodes here).
* the cloud ones (`cloud-node-lifecycle-controller`, `service-lb-controller`,
  `node-route-controller`) and `node-ipam-controller` disable themselves: no cloud provider,
  no `--allocate-node-cidrs`.
* the CSR signer skips itself: no `--cluster-signing-*` files, and no test issues CSRs.
* behind feature gates that are off in v1.35 (device-taint-eviction, podcertificaterequest
  cleaner, the serving ClusterTrustBundle publisher, storage-version GC and migrator) or off by
  default (selinux-warning).
Everything else (deployment, replicaset, garbage collector, namespace, service account,
root-CA publisher, endpoints, job, ...) runs. Leader election is off: there is one instance.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from tests.harness import pki

USER = "system:kube-controller-manager"
CONTROLLERS = "*"


def kubeconfig(server: str, ca_pem: bytes, cert: pki.KeyPair, path: Path) -> Path:
    """The controller manager's kubeconfig: the API server and its own client certificate."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [
            {
                "name": USER,
                "user": {
                    "client-certificate-data": base64.b64encode(cert.cert_pem).decode(),
                    "client-key-data": base64.b64encode(cert.key_pem).decode(),
                },
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": USER}}],
        "current-context": "test",
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))
    return path


def argv(
    binary: Path,
    *,
    kubeconfig_path: Path,
    port: int,
    serving: tuple[Path, Path],
    root_ca: Path,
    client_ca: Path,
    sa_key: Path,
    cert_dir: Path,
) -> list[str]:
    """The command line, as kubeadm's static pod has it, bound to 127.0.0.1:`port`."""
    crt, key = serving
    return [
        str(binary),
        f"--kubeconfig={kubeconfig_path}",
        # Its own /metrics callers are authenticated and authorized through the API server with
        # the same identity, as kubeadm does. The client CA is handed over directly: the lookup
        # in kube-system would log an error every few seconds about the front-proxy CA this
        # API server does not have.
        f"--authentication-kubeconfig={kubeconfig_path}",
        f"--authorization-kubeconfig={kubeconfig_path}",
        "--authentication-skip-lookup=true",
        f"--client-ca-file={client_ca}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={crt}",
        f"--tls-private-key-file={key}",
        f"--cert-dir={cert_dir}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={sa_key}",
        f"--root-ca-file={root_ca}",
        f"--controllers={CONTROLLERS}",
        "--leader-elect=false",
        # The tests create and delete many objects in a few seconds; the default 20 QPS would
        # make a namespace deletion or a garbage-collection pass wait on the client's limiter.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--v=1",
    ]


def controllers_working(admin: k8s.ApiClient) -> bool:
    """The service-account and root-CA controllers have filled the `default` namespace.

    /healthz answers before the controllers have synced their informers; these two objects
    are the first visible proof that controllers write as their own identities.
    """
    core = k8s.CoreV1Api(admin)
    try:
        core.read_namespaced_service_account("default", "default")
        core.read_namespaced_config_map("kube-root-ca.crt", "default")
    except k8s.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


ROOT_CA = "kube-root-ca.crt"


def own_names(items: list[Any]) -> list[str]:
    """Names of the listed ConfigMaps but the root CA the controllers put in every namespace."""
    return sorted(c.metadata.name for c in items if c.metadata.name != ROOT_CA)
