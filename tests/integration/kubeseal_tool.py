"""Runs the pinned kubeseal from .tools/bin; a missing binary fails the test, never skips it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import controlplane


def run(args: list[str], stdin: bytes, home: Path) -> bytes:
    try:
        binary = controlplane.tool("kubeseal")
    except controlplane.MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)
    # No kubeconfig: with --cert and a namespaced input kubeseal never needs a cluster.
    result = subprocess.run(
        [str(binary), *args],
        input=stdin,
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout
