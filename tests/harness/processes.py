"""Child processes of the test harness: finding the pinned tools, starting, waiting, stopping.

Owns what every long-running test process shares (etcd, kube-apiserver, the controller manager,
OPA, the webhook): the pinned tool lookup that fails loudly (`MissingTool`, never a skip), free
loopback ports, a process in its own group that dies with the test runner, readiness polling
that reports the process log, and stopping a whole process group. Nothing here knows Kubernetes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_TIMEOUT = float(os.environ.get("GITWARDEN_CONTROLPLANE_START_TIMEOUT", "120"))


class MissingTool(RuntimeError):
    """A binary the harness needs has not been built; `make tools` builds it."""


class StartError(RuntimeError):
    """A control-plane process exited or did not become ready in time."""


def tools_bin() -> Path:
    """Where the pinned tools live (`make tools` fills it); GITWARDEN_TOOLS_BIN overrides."""
    return Path(os.environ.get("GITWARDEN_TOOLS_BIN", REPO_ROOT / ".tools" / "bin"))


def tool(name: str) -> Path:
    """Path of a pinned tool, or `MissingTool` naming the command that builds it."""
    path = tools_bin() / name
    if not os.access(path, os.X_OK):
        raise MissingTool(f"{name} not found at {path}: run `make tools` (tools/build-tools.sh)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL us when the test
    # runner goes away, however it goes away, so no etcd or apiserver outlives a run.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class Process:
    """One child process, its own process group, and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process with stdout and stderr appended to the log file."""
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run at that point
            )

    def running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it."""
        if self.popen is None:
            return
        pgid = self.popen.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.popen.wait(timeout=grace)
        # The leader is gone; make sure nothing else in its group survived.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def wait_http(
    proc: Process,
    url: str,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = START_TIMEOUT,
) -> None:
    """Poll `url` until it answers 200; fail with the process log if it exits or times out."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not proc.running():
            raise StartError(f"{proc.name} exited during start:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310 - loopback URL built here
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise StartError(
        f"{proc.name} not ready at {url} after {timeout:.0f}s ({last}):\n" + proc.log_tail()
    )


def wait_for(
    proc: Process, check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT
) -> None:
    """Poll `check()` until true; fail with the process log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not check():
        if not proc.running():
            raise StartError(f"{proc.name} exited during start:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise StartError(f"{proc.name}: no {what} after {timeout:.0f}s:\n{proc.log_tail()}")
        time.sleep(0.1)
