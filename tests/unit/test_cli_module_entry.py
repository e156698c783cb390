"""`python -m gitwarden_cli.main` behaves like the installed `gitwarden` script."""

from __future__ import annotations

import pathlib
import subprocess
import sys


def test_a_usage_error_under_python_dash_m_is_exit_2_without_a_traceback(
    tmp_path: pathlib.Path,
) -> None:
    # Run as `__main__`, the module is a second copy of gitwarden_cli.main; a subcommand's
    # UsageError must still be caught as one.
    done = subprocess.run(
        [sys.executable, "-m", "gitwarden_cli.main", "webhook", "opa-data",
         "--config", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "missing.yaml" in done.stderr
