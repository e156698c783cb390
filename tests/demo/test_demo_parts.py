"""The demo's own parts without a cluster: its process check, its report and its verdicts.

The process check must see what the demo starts, including a daemon that detached (the demo is
a subreaper), and nothing once it is gone; the report must turn a crashing step into a FAIL with
its reason and no traceback; a Sync status is read as applied or stalled only for its commit.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from typing import Any

import pytest

from demo import context, driver, procs, report


def test_a_child_is_seen_until_it_has_exited_and_been_reaped() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in {p.pid for p in procs.descendants()}
    finally:
        child.terminate()
        child.wait()
    assert child.pid not in {p.pid for p in procs.descendants()}
    assert not procs.alive(child.pid)


def test_a_daemon_that_detached_is_still_found_by_the_subreaper() -> None:
    """What gpg-agent does: fork, let the parent exit, keep running in the grandchild."""
    script = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n"
    probe = (
        "import subprocess, sys, time\n"
        "from demo import procs\n"
        "procs.become_subreaper()\n"
        f"subprocess.run([sys.executable, '-c', {script!r}], check=True)\n"
        "found = procs.descendants()\n"
        "print(len(found))\n"
        "procs.kill_descendants(timeout=2)\n"
        "print(len(procs.descendants()))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip
    assert done.stdout.split() == ["1", "0"], done.stdout + done.stderr


def test_a_listening_port_is_reported_and_a_closed_one_is_not() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert procs.listening([port]) == [port]
    assert procs.listening([port]) == []


def test_leftovers_wait_for_a_process_that_is_stopping() -> None:
    # In a process of its own: pytest's may hold the session's control plane.
    probe = (
        "import subprocess, sys\n"
        "from demo import procs\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.5)'])\n"
        "print(procs.leftovers([], timeout=10), child.poll())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip
    assert done.stdout.split() == ["([],", "[])", "0"], done.stdout + done.stderr


def test_a_step_that_raises_is_a_fail_with_its_reason_and_no_traceback() -> None:
    out = io.StringIO()
    run = report.Report(out)

    def crash(step: report.Step) -> str:
        raise RuntimeError("the API server went away\nsecond line")

    step = run.run(1, "crash", "raises", crash)
    assert not step.passed
    text = out.getvalue()
    assert "FAIL  RuntimeError: the API server went away" in text
    assert "second line" not in text
    assert "Traceback" not in text


def test_the_summary_fails_when_one_step_failed_and_lists_every_time() -> None:
    out = io.StringIO()
    run = report.Report(out)
    run.run(1, "good", "passes", lambda step: "fine")
    run.run(2, "bad", "fails", lambda step: "" if step.expect(False, "it broke") else "x")
    assert run.summary([("setup", True, 1.0, "")], []) is False
    table = out.getvalue()
    assert "FAIL  it broke" in table
    for row in ("setup", "1. good", "2. bad"):
        assert any(line.startswith(row) for line in table.splitlines()), row


def test_the_summary_passes_only_when_every_row_passed() -> None:
    run = report.Report(io.StringIO())
    run.run(1, "good", "passes", lambda step: "fine")
    assert run.summary([("setup", True, 0.5, "")], [("teardown", True, 0.1, "")]) is True
    assert run.summary([], [("teardown", False, 0.1, "left: sleep")]) is False


class _Sync:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def sync(self) -> dict[str, Any]:
        return {"status": self.status}


def _condition(kind: str, value: str, reason: str = "R", message: str = "m") -> dict[str, str]:
    return {"type": kind, "status": value, "reason": reason, "message": message}


def test_an_outcome_counts_only_for_the_commit_it_names() -> None:
    a, b = "a" * 40, "b" * 40
    ready = _Sync({"lastAppliedCommit": a, "conditions": [_condition("Ready", "True")]})
    assert driver.read_outcome(ready, a).applied
    assert driver.read_outcome(ready, b) is None
    stalled = _Sync(
        {
            "lastAppliedCommit": a,
            "lastAttemptedCommit": b,
            "conditions": [_condition("Ready", "False"), _condition("Stalled", "True", "X")],
        }
    )
    outcome = driver.read_outcome(stalled, b)
    assert outcome is not None
    assert (outcome.applied, outcome.stalled, outcome.reason) == (False, True, "X")
    # Ready=False: the older applied commit is not reported as applied again.
    assert driver.read_outcome(stalled, a) is None


@pytest.mark.parametrize(
    ("message", "short"),
    [
        (f"revision {'c' * 40} refused: {'c' * 40}: unsigned", f"revision {'c' * 12} refused: "
         f"{'c' * 12}: unsigned"),
        ("no commit id here", "no commit id here"),
    ],
)  # fmt: skip
def test_refusals_are_shown_with_short_commit_ids(message: str, short: str) -> None:
    assert context.short(message) == short


def test_the_demo_runs_the_reconciler_loop() -> None:
    chosen = driver.build(None, None, {"keys": 1, "server": 2, "push": 3})
    assert isinstance(chosen, driver.Loop)
    assert chosen.process_ids() == {}  # choosing starts nothing
