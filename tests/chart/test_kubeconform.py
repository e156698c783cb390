"""kubeconform -strict accepts every rendered value set, offline, and is really strict.

The schemas come from the test cluster's own API server (tests/chart/kubeschemas.py, cached
under .tools/); kubeconform is given that directory only. A kind it has no schema for must be
an error, not a download, and a field a schema does not know must be refused.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.chart import kubeschemas, render
from tests.harness.controlplane import tool


@cache
def _schemas() -> Path:
    if not (kubeschemas.cache_dir() / ".complete").exists():
        done = subprocess.run(
            [sys.executable, "-m", "tests.chart.kubeschemas"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=render.ROOT,
        )
        assert done.returncode == 0, done.stderr
    return kubeschemas.cache_dir()


def _kubeconform(manifests: str) -> subprocess.CompletedProcess[str]:
    location = f"{_schemas()}/{kubeschemas.LOCATION}"
    return subprocess.run(
        [str(tool("kubeconform")), "-strict", "-summary", "-schema-location", location],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("value_set", render.value_sets())
def test_every_rendered_object_is_valid_for_the_test_clusters_version(value_set: str) -> None:
    done = subprocess.run(
        render.helm_args(value_set), capture_output=True, text=True, timeout=60, check=True
    )
    checked = _kubeconform(done.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in checked.stdout


def test_a_kind_without_a_local_schema_is_an_error_not_a_download() -> None:
    checked = _kubeconform("apiVersion: example.invalid/v1\nkind: Widget\nmetadata: {name: w}\n")
    assert checked.returncode != 0
    assert "could not find schema for Widget" in checked.stdout


def test_an_unknown_field_is_refused() -> None:
    manifest = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
        "spec: {ports: [{port: 443, targetPrt: https}]}\n"
    )
    checked = _kubeconform(manifest)
    assert checked.returncode != 0
    assert "targetPrt" in checked.stdout
