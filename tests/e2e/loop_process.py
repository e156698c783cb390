"""The long-running reconciler as the loop tests run it: a real child process, its log, signals.

Owns starting `gitwarden reconcile --config F` (no `--once`) with the loop's sections added to
a reconcile test's configuration (short intervals, endpoints on 127.0.0.1 ephemeral ports), its
JSON log (a file per process, read as the test goes), waiting on the Sync's conditions and on
log lines, and ending it (SIGTERM, SIGKILL). Nothing here is faked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from tests.e2e.reconcile_stack import Env
from tests.harness import canaries

FAST_LOOP: dict[str, Any] = {
    "loop": {"interval": 2.0, "jitter": 0.0, "retry_base": 0.5, "retry_max": 2.0},
    "leader": {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5},
    "server": {"listen": "127.0.0.1:0"},
    "keys": {"serve": False},
    "log": {"format": "json", "level": "info"},
}


@dataclass
class Loop:
    """One running reconciler process."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    config: Path
    started: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (a line that is not JSON fails the test)."""
        found = []
        for line in self.text().splitlines():
            if line.strip():
                parsed = json.loads(line)
                assert isinstance(parsed, dict), line
                found.append(parsed)
        return found

    def wait_log(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 60.0, what: str = ""
    ) -> dict[str, Any]:
        """The first log line for which `wanted` holds, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if wanted(line):
                    return line
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"no log line {what} within {timeout}s:\n{self.text()[-4000:]}")

    def applied(self, commit: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the log line of a pass that applied `commit`."""
        return self.wait_log(
            lambda line: line.get("result") == "applied" and line.get("revision") == commit,
            timeout,
            f"applied {commit[:12]}",
        )

    def ports(self) -> tuple[int, int | None]:
        """The endpoints' port and the push receiver's (None without one), from the log."""
        line = self.wait_log(lambda ln: "port" in ln, 30, "with the endpoints' port")
        return int(line["port"]), line.get("push_port")

    def get(self, path: str) -> tuple[int, str]:
        """GET `path` from the endpoints (status and body)."""
        port, _ = self.ports()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def keep_metrics(self) -> None:
        """Keep /metrics for the suite's secret scan before the process (and it) goes."""
        if self.proc.poll() is not None:
            return
        port = next((ln["port"] for ln in self.lines() if "port" in ln), None)
        if port is None:
            return
        try:
            url = f"http://127.0.0.1:{int(port)}/metrics"
            with urllib.request.urlopen(url, timeout=5) as answer:  # loopback only
                canaries.keep(f"loop /metrics ({self.log_path.name})", answer.read().decode())
        except OSError:
            pass  # a process being killed mid-test: its log is still scanned

    def terminate(self, timeout: float = 40.0) -> int:
        self.keep_metrics()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.keep_metrics()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def config_with(base: Path, sections: Mapping[str, Any]) -> Path:
    """`base` with the loop's sections (FAST_LOOP, then `sections`) merged in, as a new file."""
    document = yaml.safe_load(base.read_text())
    for key, value in {**FAST_LOOP, **sections}.items():
        document[key] = {**document.get(key, {}), **value}
    path = base.with_name(f"{base.stem}-loop-{uuid.uuid4().hex[:6]}.yaml")
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def start(env: Env, config: Path, **sections: Any) -> Loop:
    """Start the reconciler on `config` (sections merged in) as a child process."""
    path = config_with(config, sections)
    log_path = env.workdir / f"loop-{uuid.uuid4().hex[:8]}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gitwarden_cli.main", "reconcile", "--config", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"},
        )
    return Loop(proc, log_path, path)


@dataclass
class Running:
    """Every process a test started, killed at the end whatever happened."""

    started: list[Loop] = field(default_factory=list)

    def start(self, env: Env, config: Path, **sections: Any) -> Loop:
        loop = start(env, config, **sections)
        self.started.append(loop)
        return loop

    def stop_all(self) -> None:
        for loop in self.started:
            loop.stop()


def running() -> Iterator[Running]:
    """For a fixture: yields a `Running`, kills what is left at the end."""
    processes = Running()
    try:
        yield processes
    finally:
        processes.stop_all()


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


def conditions(env: Env, name: str) -> dict[str, tuple[str, str]]:
    """The Sync's conditions as type → (status, reason), {} before the first write."""
    try:
        found = env.sync(name)
    except k8s.ApiException as exc:
        if exc.status == 404:  # before the first status write
            return {}
        raise
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (found.get("status") or {}).get("conditions") or []
    }
