"""Sampling the webhook's gunicorn workers with py-spy while the bench loads them.

Owns running `py-spy record` on a process and its children (raw collapsed stacks) and the
summary bench_webhook prints: where the samples of request-handling threads fall, grouped by
what they do (TLS, gunicorn, Flask, parsing, the OPA call inside requests/urllib3, logging,
metrics) and the functions with the most own time. py-spy is a development tool (`pip install
py-spy`), asked for with `--profile` only; when asked for and missing the bench fails loudly.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

# First match wins, checked from the leaf towards the root of each stack.
_GROUPS = (
    ("logging", ("logging/", "logbuffer.py")),
    ("metrics (prometheus-client)", ("prometheus_client/",)),
    ("OPA call: requests", ("requests/",)),
    ("OPA call: urllib3 + http.client", ("urllib3/", "http/client.py")),
    ("OPA call: GitWarden's transport", ("webhook/opatransport.py",)),
    ("OPA client", ("opa_client/",)),
    ("JSON", ("json/",)),
    ("Flask + Werkzeug", ("flask/", "werkzeug/")),
    ("GitWarden: review parsing + input", ("webhook/review.py", "webhook/facts.py")),
    ("GitWarden: parent lookups", ("kubernetes/", "webhook/parents.py", "webhook/apitransport.py")),
    ("GitWarden: policy + app", ("webhook/policy.py", "webhook/app.py")),
    ("TLS + sockets", ("ssl.py", "socket.py", "selectors.py")),
    (
        "serving: gunicorn + the worker",
        ("gunicorn/", "webhook/worker.py", "webhook/fastpath.py", "webhook/deadline.py"),
    ),
)


def binary() -> str:
    """The py-spy executable, or SystemExit saying how to install it."""
    # pip puts it beside the interpreter of the venv, which need not be on PATH.
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def start(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Record `pid` and its children for `seconds` into `out` (collapsed stacks)."""
    return subprocess.Popen(
        [
            binary(),
            "record",
            f"--pid={pid}",
            "--subprocesses",
            f"--duration={seconds}",
            "--rate=250",
            "--nonblocking",
            "--format=raw",
            f"--output={out}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# A socket wait or a JSON call inside one of these is counted as that one's.
_CALLERS = frozenset(
    {
        "logging",
        "metrics (prometheus-client)",
        "OPA call: requests",
        "OPA call: urllib3 + http.client",
        "OPA call: GitWarden's transport",
        "OPA client",
        "GitWarden: parent lookups",
    }
)


def _matches(frame: str) -> str | None:
    return next((name for name, needles in _GROUPS if any(n in frame for n in needles)), None)


def _group(frames: list[str]) -> str:
    """The group of the frame nearest the leaf, unless a caller group sits above it."""
    found = [g for g in (_matches(f) for f in reversed(frames)) if g is not None]
    if not found:
        return "other"
    return (
        next((g for g in found if g in _CALLERS), found[0])
        if found[0] not in _CALLERS and found[0] in ("TLS + sockets", "JSON")
        else found[0]
    )


def _frames(stack: str) -> list[str]:
    # A raw line is `frame;frame;...;leaf count`; a frame is `function (file:line)`.
    return stack.split(";")


def summary(out: Path, top: int = 15) -> str:
    """Shares of samples per group and the functions with the most own time."""
    groups: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = _frames(stack)
        # Idle threads: gunicorn's poller waiting for events and workers waiting for work.
        if (
            any(
                "wait_for_and_dispatch_events" in f or "_worker (concurrent/futures" in f
                for f in frames[-3:]
            )
            or "select (selectors.py" in frames[-1]
            or "_bootstrap" in frames[-1]
        ):
            continue
        count = int(count_text)
        total += count
        leaves[frames[-1]] += count
        groups[_group(frames)] += count
    if total == 0:
        return "py-spy recorded no busy samples"
    lines = [f"{total} busy samples (request threads and event loops, idle waits left out):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in groups.most_common()]
    lines.append(f"top {top} functions by own time:")
    lines += [f"  {100 * n / total:5.1f}%  {leaf}" for leaf, n in leaves.most_common(top)]
    return "\n".join(lines)
