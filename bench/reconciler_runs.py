"""What the drift and memory benches share: the real stack, a reconciler process, its memory.

The stack is the end-to-end one (`tests.e2e.reconcile_stack`): kube-apiserver + etcd, OPA and
the webhook enforcing, the GitOps identity with its least-privilege role, a break-glass user.
The reconciler runs as a child process from a config file: `gitwarden reconcile --config F`,
the loop as the chart runs it. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import reconcile_stack
from tests.harness import gitopsrepo
from tests.harness.controlplane import free_port, running_control_plane

STOP_TIMEOUT = 20.0


@contextlib.contextmanager
def stack() -> Iterator[reconcile_stack.Env]:
    """A fresh control plane with the whole admission stack and the GitOps identity."""
    with (
        running_control_plane() as plane,
        tempfile.TemporaryDirectory(prefix="bench-reconciler-") as tmp,
        reconcile_stack.running_env(plane, plane.admin(), Path(tmp)) as env,
    ):
        yield env


def config_file(env: reconcile_stack.Env, repo: gitopsrepo.GitOpsRepo, name: str) -> Path:
    """The reconciler's config: no client-side rate limit, one replica, loopback endpoints."""
    path = env.config(repo, name, qps=0, concurrency=16)
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    document.update(
        {
            "leader": {"enabled": False},
            "server": {"listen": f"127.0.0.1:{free_port()}"},
            "keys": {"serve": False},
            "loop": {"interval": 600.0},
        }
    )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "gitwarden_cli.main", "reconcile", "--config", str(config)]


@contextlib.contextmanager
def reconciler(
    config: Path, log: Path, *, trace: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """The reconciler process while inside; SIGTERM (then SIGKILL) on the way out.

    With `trace`, the child runs with PYTHONTRACEMALLOC (the stand-in dumps on SIGUSR1).
    """
    env = {**os.environ, "PYTHONTRACEMALLOC": "1"} if trace else None
    with log.open("wb") as out:
        child = subprocess.Popen(argv(config), stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield child
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGTERM)
                try:
                    child.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(STOP_TIMEOUT)


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc/<pid>/status."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


def wait_applied(
    env: reconcile_stack.Env,
    name: str,
    commit: str,
    child: subprocess.Popen[bytes],
    log: Path,
    *,
    timeout: float,
) -> float:
    """Wait until Sync `name` says `commit` is applied; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if child.poll() is not None:
            raise SystemExit(f"the reconciler exited ({child.returncode}):\n{log.read_text()}")
        with contextlib.suppress(Exception):
            sync = env.sync(name)
            ready = [
                c for c in sync.get("status", {}).get("conditions", []) if c["type"] == "Ready"
            ]
            if commit in str(sync.get("status")) and ready and ready[0]["status"] == "True":
                return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"{commit[:12]} not applied in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `samples`."""
    ordered = sorted(samples)
    rank = max(int(-(-fraction * len(ordered) // 1)), 1)
    return ordered[rank - 1]
