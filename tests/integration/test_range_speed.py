"""The bench's 1,000-commit range verifies completely; how fast is measured by `bench.bench_verify`.

No timing is asserted here: a timed test fails on a loaded runner and proves nothing the bench
does not print with its baseline.
"""

from __future__ import annotations

import datetime
import pathlib

import pytest

from bench import bench_verify
from reconciler import gitsource, verify


def test_the_benchs_thousand_commit_range_verifies_every_commit(tmp_path: pathlib.Path) -> None:
    try:
        repo, shas, trust = bench_verify.build(tmp_path, 1000)
    finally:
        bench_verify.stop_agent(tmp_path)
    checkout = gitsource.open_local(repo, "main", shas[0])
    now = datetime.datetime.now(datetime.UTC)
    report = verify.inspect(checkout, trust, verify.Mode.ALL, None, now)
    assert report.ok
    assert [v.sha for v in report.verdicts] == shas[1:]


def test_the_start_up_bench_runs_and_reports_the_target(
    opa: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small run of the 10,000-commit start-up case, so the bench cannot rot unnoticed."""
    bench_verify.startup(300, 20, opa)
    out = capsys.readouterr().out
    assert "start-up: (anchor, tip] over 300 signed commits" in out
    assert "the signature checks alone (floor" in out
    assert "target ≤ 1.0s wall:" in out
