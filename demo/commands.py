"""Running the real command-line tools the demo shows: `gitwarden`, `kubectl`.

Owns starting each command as a child process with an explicit, small environment, with a
deadline, and returning what it printed. Commands a user would type are also appended to the
demo's transcript, so `KEEP=1` users can repeat them. Must not interpret the output: the steps
decide what it means.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.harness import controlplane

REPO_ROOT = controlplane.REPO_ROOT


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code and its output."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    # Why an allow-list: an exported KUBECONFIG, KUBECTL_KUBERC or GIT_* of the user's shell
    # must not change what the demo shows.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["KUBECTL_KUBERC"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run(
    argv: list[str],
    *,
    stdin: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Result:
    """Run `argv`; never raises on a non-zero exit (a timeout is exit code 124)."""
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_env(env),
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        return Result(tuple(argv), 124, _text(exc.stdout), _text(exc.stderr) + "\n(timed out)")
    return Result(tuple(argv), done.returncode, done.stdout, done.stderr)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def gitwarden_argv(*args: str) -> list[str]:
    """The `gitwarden` command with this interpreter (the venv's installed entry point)."""
    return [sys.executable, "-m", "gitwarden_cli.main", *args]


def gitwarden(*args: str, stdin: str = "", timeout: float = 120) -> Result:
    """`gitwarden ARGS...` as an operator runs it."""
    return run(gitwarden_argv(*args), stdin=stdin, timeout=timeout)


def kubectl(kubeconfig: Path, *args: str, editor: str | None = None, tmp: Path) -> Result:
    """`kubectl --kubeconfig=F ARGS...`; `editor` is what `kubectl edit` runs."""
    # kubectl edit keeps a refused edit in TMPDIR: keep it inside the demo's directory.
    env = {"TMPDIR": str(tmp)}
    if editor is not None:
        env["KUBE_EDITOR"] = editor
    return run(["kubectl", f"--kubeconfig={kubeconfig}", *args], env=env, timeout=60)


def shown(argv: tuple[str, ...] | list[str]) -> str:
    """A command as the user would type it (`gitwarden` instead of `python -m ...`)."""
    words = list(argv)
    if words[:3] == [sys.executable, "-m", "gitwarden_cli.main"]:
        words = ["gitwarden", *words[3:]]
    words = [w for w in words if not w.startswith("--kubeconfig=")]
    return shlex.join(words)
