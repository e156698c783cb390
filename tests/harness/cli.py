"""Running the real `gitwarden` command line in a child process, as an operator does.

A child process shows the exit code and stderr as they are, tracebacks included, which an
in-process call of `main()` would hide behind pytest's own exception handling.
"""

from __future__ import annotations

import subprocess
import sys

from tests.harness.controlplane import REPO_ROOT

_ENTRY = "import sys; from gitwarden_cli import main; sys.exit(main.main())"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`gitwarden ARGS...` with this interpreter; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )
