"""What the demo prints: a heading per step, its details, PASS or FAIL with why, a summary.

Owns the text layout only (short lines, no colour codes when stdout is not a terminal) and the
bookkeeping of each step's checks and time. Must not decide what passes: a step calls `expect`
with its own reading of the cluster and the commands' output.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

_WIDTH = 100


@dataclass
class Step:
    """One step's checks: every failed expectation is kept, the first one is the reason."""

    number: int
    title: str
    out: TextIO
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    why: str = ""

    def say(self, text: str) -> None:
        """A detail line under the step's heading."""
        for line in textwrap.wrap(
            text, _WIDTH - 6, subsequent_indent="  ", break_on_hyphens=False
        ) or [""]:
            print(f"      {line}", file=self.out, flush=True)

    def expect(self, ok: bool, failure: str) -> bool:
        """Record `failure` unless `ok`; returns `ok` so a step can stop early."""
        if not ok:
            self.failures.append(failure)
        return ok

    @property
    def passed(self) -> bool:
        return not self.failures


def _colour(text: str, code: str, out: TextIO) -> str:
    return f"\033[{code}m{text}\033[0m" if out.isatty() else text


class Report:
    """The whole run: steps in order and the summary table."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.steps: list[Step] = []

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self, number: int, title: str, what: str, body: Callable[[Step], str]) -> Step:
        """Run one step: print what it does, run `body`, print PASS/FAIL and why."""
        step = Step(number, title, self.out)
        self.steps.append(step)
        self.line()
        self.line(_colour(f"[{number}/7] {title}", "1", self.out))
        step.say(what)
        try:
            step.why = body(step)
        except Exception as exc:  # a step that crashes is a FAIL with its reason, not a traceback
            step.failures.append(f"{type(exc).__name__}: {_first_line(str(exc))}")
        step.seconds = time.monotonic() - step.started
        if step.passed:
            self._verdict(_colour("PASS", "32;1", self.out), step.why)
        else:
            self._verdict(_colour("FAIL", "31;1", self.out), step.failures[0])
            for more in step.failures[1:]:
                self._verdict("also", more)
        return step

    def _verdict(self, label: str, text: str) -> None:
        lines = textwrap.wrap(text, _WIDTH - 12, break_on_hyphens=False) or [""]
        self.line(f"      {label}  {lines[0]}")
        for line in lines[1:]:
            self.line(f"            {line}")

    def summary(
        self, before: list[tuple[str, bool, float, str]], after: list[tuple[str, bool, float, str]]
    ) -> bool:
        """Print the table: `before` rows, every step, `after` rows; True when all passed."""
        rows = [
            *before,
            *((f"{s.number}. {s.title}", s.passed, s.seconds, _note(s)) for s in self.steps),
        ]
        rows += after
        width = max(len(r[0]) for r in rows)
        self.line()
        self.line(f"{'step':<{width}}  result  time")
        self.line(f"{'-' * width}  ------  -------")
        for title, passed, seconds, note in rows:
            verdict = "PASS" if passed else "FAIL"
            suffix = f"  {note}" if note else ""
            self.line(f"{title:<{width}}  {verdict:<6}  {seconds:6.1f}s{suffix}")
        return all(r[1] for r in rows)


def _note(step: Step) -> str:
    """A failed step's first reason, short enough for the summary table."""
    if step.passed:
        return ""
    reason = step.failures[0]
    return reason if len(reason) <= 60 else reason[:57].rstrip() + "..."


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no message)"
