"""The demo's GitOps repository: what is in Git, who signs it, and the reconciler's settings.

Owns the manifests the steps commit (two namespaces, a Deployment, ConfigMaps and a SealedSecret
made with `gitwarden seal`), the repository itself (`tests/harness/gitopsrepo.py`: real git,
commits signed by ssh-keygen and gpg keys made for this run; alice and bob are the policy
admins, mallory's key is not trusted) and the reconciler's YAML configuration. Must not talk to
the cluster: the steps and the driver do.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml

from demo import commands, stack
from tests.harness import controlplane, gitopsrepo

APP_NS, DATA_NS = "shop", "billing"
MANIFESTS = "clusters/demo"
APP_FILE = f"{MANIFESTS}/shop.yaml"
SECRET_FILE = f"{MANIFESTS}/billing.yaml"
FLAGS_FILE = f"{MANIFESTS}/feature-flags.yaml"
SECRET_NAME, SECRET_KEY = "db-credentials", "password"
# Seconds between the loop's passes. Each commit is also announced to the push receiver, so a
# pass starts at once; the interval is long enough that a break-glass edit is taken back by
# drift repair from the watches (which records who changed it), not by the next pass.
LOOP_INTERVAL = 30.0


def namespaces() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for ns in (APP_NS, DATA_NS)
    ]


def configmap(name: str, data: dict[str, str], ns: str = APP_NS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def deployment(replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": APP_NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                # No node runs in the demo cluster: the image is never pulled.
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/shop:1.0"}]},
            },
        },
    }


def shop(mode: str) -> list[dict[str, Any]]:
    """The app file: the Deployment and its ConfigMap (`mode` is what later steps change)."""
    return [deployment(), configmap("settings", {"mode": mode})]


def seal(cert: Path, value: str) -> str:
    """A SealedSecret for `billing/db-credentials`, made by `gitwarden seal --cert`."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": DATA_NS},
        "stringData": {SECRET_KEY: value},
    }
    done = commands.gitwarden("seal", "--cert", str(cert), stdin=yaml.safe_dump(secret))
    if done.code != 0:
        raise RuntimeError(f"gitwarden seal failed: {done.stderr.strip()}")
    return done.stdout


def create(workdir: Path, keys: gitopsrepo.Keys) -> gitopsrepo.GitOpsRepo:
    """A repository whose first commit (signed by alice) is the trust anchor."""
    return gitopsrepo.create(workdir / "repo", keys)


def write_config(
    path: Path, repo: gitopsrepo.GitOpsRepo, running: stack.Stack, ports: dict[str, int]
) -> Path:
    """The reconciler's configuration: the one-pass keys plus the loop's sections."""
    gitopsrepo.write_config(
        path,
        repo,
        name=stack.SYNC_NAME,
        kubeconfig=running.kubeconfigs["gitops"],
        cache_dir=running.workdir / "reconciler-cache",
        opa=controlplane.tool("opa"),
        namespace=stack.GITOPS_NS,
        paths=(MANIFESTS,),
    )
    secret = running.workdir / "push-secret"
    secret.touch(mode=0o600)
    secret.write_text(secrets.token_hex(32))
    document = yaml.safe_load(path.read_text())
    document.update(
        {
            "loop": {
                "interval": LOOP_INTERVAL,
                "jitter": 0.0,
                "retry_base": 1.0,
                "retry_max": 5.0,
            },
            "leader": {"enabled": True},
            "server": {"listen": f"127.0.0.1:{ports['server']}"},
            # check_every: the leader makes the first sealing key within seconds of winning the
            # Lease (a leader elected between the key service's first look and its wait would
            # otherwise wait the default hour: reported to the lead).
            "keys": {"serve": True, "listen": f"127.0.0.1:{ports['keys']}", "check_every": 2.0},
            "push": {"listen": f"127.0.0.1:{ports['push']}", "hmac_secret_file": str(secret)},
            "log": {"format": "text"},
        }
    )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
