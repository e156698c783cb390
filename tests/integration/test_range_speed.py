"""Acceptance: verifying a 1,000-commit range takes well under a second on the CI machine."""

from __future__ import annotations

import datetime
import pathlib
import time

import pytest

from bench import bench_verify
from reconciler import gitsource, verify


def test_thousand_commit_range_verifies_in_well_under_a_second(tmp_path: pathlib.Path) -> None:
    try:
        repo, shas, trust = bench_verify.build(tmp_path, 1000)
    finally:
        bench_verify.stop_agent(tmp_path)
    checkout = gitsource.open_local(repo, "main", shas[0])
    now = datetime.datetime.now(datetime.UTC)
    start = time.perf_counter()
    report = verify.inspect(checkout, trust, verify.Mode.ALL, None, now)
    elapsed = time.perf_counter() - start
    assert report.ok
    assert len(report.verdicts) == 1000
    # Measured around 0.1 s here; the bound leaves room for a loaded shared runner.
    assert elapsed < 0.5, f"{elapsed:.3f}s"


def test_the_start_up_bench_runs_and_reports_the_target(
    opa: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small run of the 10,000-commit start-up case, so the bench cannot rot unnoticed."""
    bench_verify.startup(300, 20, opa)
    out = capsys.readouterr().out
    assert "start-up: (anchor, tip] over 300 signed commits" in out
    assert "the signature checks alone (floor" in out
    assert "target ≤ 1.0s wall:" in out
