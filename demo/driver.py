"""How the demo runs the reconciler: the long-running loop, as the chart runs it.

Owns starting and stopping `gitwarden reconcile --config F` (drift repair, the push receiver
and the sealing-key service run in it), fetching the served sealing certificate, and
`converge`: wait until the Sync status reports the outcome for a given commit. Must not judge
an outcome: the steps do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from demo import commands, stack
from tests.harness import controlplane

CERT_PATH = "/v1/cert.pem"


@dataclass(frozen=True)
class Converged:
    """What the Sync status says about one commit after the reconciler saw it."""

    commit: str
    applied: bool
    stalled: bool
    reason: str
    message: str
    output: str  # what the reconciler printed about it (the loop: nothing)


class Reconciler(Protocol):
    """The reconciler as the steps see it."""

    description: str

    def start(self) -> None: ...
    def certificate_url(self) -> str: ...
    def certificate(self) -> Path: ...
    def converge(self, commit: str, timeout: float = 60) -> Converged: ...
    def stop(self) -> None: ...
    def process_ids(self) -> dict[str, int]: ...


def build(running: stack.Stack, config: Path, ports: dict[str, int]) -> Reconciler:
    """The reconciler the steps talk to (not started yet)."""
    return Loop(running, config, ports)


def _conditions(sync: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = (sync.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in found}


def read_outcome(running: stack.Stack, commit: str, output: str = "") -> Converged | None:
    """The Sync status's verdict on `commit`, or None while it has none yet."""
    sync = running.sync()
    state = sync.get("status") or {}
    conditions = _conditions(sync)
    ready, stalled = conditions.get("Ready", {}), conditions.get("Stalled", {})
    if state.get("lastAppliedCommit") == commit and ready.get("status") == "True":
        return Converged(
            commit, True, False, str(ready.get("reason", "")), str(ready.get("message", "")), output
        )
    if state.get("lastAttemptedCommit") == commit and stalled.get("status") == "True":
        return Converged(
            commit,
            False,
            True,
            str(stalled.get("reason", "")),
            str(stalled.get("message", "")),
            output,
        )
    return None


def _wait_for(url: str, proc: controlplane.Process, timeout: float = 60) -> None:
    controlplane.wait_http(proc, url, timeout=timeout)


def _download(url: str, target: Path) -> Path:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback URL built here
        target.write_bytes(resp.read())
    return target


class Loop:
    """`gitwarden reconcile --config F`: the long-running loop, drift repair and keys in it."""

    description = "the reconciler loop: gitwarden reconcile --config reconciler.yaml"

    def __init__(self, running: stack.Stack, config: Path, ports: dict[str, int]) -> None:
        self._stack, self._config, self._ports = running, config, ports
        self._proc: controlplane.Process | None = None

    def start(self) -> None:
        argv = commands.gitwarden_argv("reconcile", "--config", str(self._config))
        self._proc = controlplane.Process(
            "reconciler", argv, self._stack.workdir / "reconciler.log"
        )
        self._proc.start()
        _wait_for(f"http://127.0.0.1:{self._ports['keys']}{CERT_PATH}", self._proc)

    def certificate_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['keys']}{CERT_PATH}"

    def certificate(self) -> Path:
        return _download(self.certificate_url(), self._stack.workdir / "sealing.crt")

    def announce(self) -> bool:
        """Tell the push receiver the branch moved, as a Git host would (HMAC-signed)."""
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        secret = (self._stack.workdir / "push-secret").read_bytes().strip()
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._ports['push']}/hook",
            data=body,
            headers={"X-GitWarden-Signature-256": signature, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
                return bool(resp.status == 202)
        except (urllib.error.URLError, OSError):
            return False  # no receiver: the next interval's pass picks the commit up

    def converge(self, commit: str, timeout: float = 60) -> Converged:
        self.announce()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or not self._proc.running():
                tail = self._proc.log_tail(5) if self._proc else ""
                return Converged(
                    commit,
                    False,
                    False,
                    "exited",
                    f"the reconciler loop is not running: {tail}",
                    "",
                )
            outcome = read_outcome(self._stack, commit)
            if outcome is not None:
                return outcome
            time.sleep(0.3)
        return Converged(
            commit,
            False,
            False,
            "timeout",
            f"no outcome for this commit within {timeout:.0f} s",
            "",
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def process_ids(self) -> dict[str, int]:
        if self._proc is None or self._proc.popen is None or not self._proc.running():
            return {}
        return {"reconciler": self._proc.popen.pid}


def wait_url_tls(url: str, context: ssl.SSLContext, timeout: float = 30) -> bool:
    """Whether `url` answers 200 within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False
