"""Process bookkeeping for the demo: reaping orphans, and proving that nothing was left behind.

Owns making the demo process a child subreaper (so daemons its children start, such as
gpg-agent, stay its descendants instead of escaping to init), listing its live descendants,
and checking that no port it used still listens. It must not start or stop services itself:
`demo.stack` does that; this module only observes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux only).

    Why: gpg and gunicorn start helpers that detach; as a subreaper the demo still sees them,
    so its final check can say truthfully that nothing is left running.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@dataclass(frozen=True)
class Proc:
    """A live process: its id and command line."""

    pid: int
    cmdline: str


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) from /proc/<pid>/stat, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int | None = None) -> list[Proc]:
    """Every live (non-zombie) descendant of `root` (default: this process)."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] != "Z":
            parents[int(entry.name)] = stat[0]
    found: list[Proc] = []
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        for pid in sorted(children):
            found.append(Proc(pid, _cmdline(pid)))
        frontier = children
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def reap() -> None:
    """Collect exit statuses of finished children (a subreaper inherits zombies)."""
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return


def listening(ports: Iterable[int]) -> list[int]:
    """The ports among `ports` that something on 127.0.0.1 still accepts connections on."""
    open_ports = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                open_ports.append(port)
    return open_ports


def kill_descendants(timeout: float = 5.0) -> None:
    """SIGTERM what is left under this process, then SIGKILL after `timeout` (last resort)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = descendants()
        for proc in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while descendants() and time.monotonic() < deadline:
            reap()
            time.sleep(0.1)
        reap()


def leftovers(ports: Iterable[int], timeout: float = 5.0) -> tuple[list[Proc], list[int]]:
    """Descendants and listening ports still there after up to `timeout` seconds."""
    ports = list(ports)
    deadline = time.monotonic() + timeout
    while True:
        reap()
        procs, still = descendants(), listening(ports)
        if (not procs and not still) or time.monotonic() > deadline:
            return procs, still
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped, is not)."""
    if pid <= 0:
        return False
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"
