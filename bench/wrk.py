"""Driving `wrk` (the HTTP load generator) with a mix of request bodies over keep-alive TLS.

Owns the Lua script wrk runs (each thread cycles through every body from its own offset, so
connections send different reviews at the same moment), running wrk bounded in time against
127.0.0.1 only, and reading its result line. wrk comes from the distribution's package
(`apt-get install wrk`); a missing wrk fails loudly, the bench never falls back silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import webhook_mix

_SCRIPT = r"""
local requests, n, i = {}, 0, 0
local headers = {["Content-Type"] = "application/json"}
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 389)
end

function init(args)
  for line in io.lines(args[1]) do
    local sp = line:find(" ", 1, true)
    n = n + 1
    local path, body = line:sub(1, sp - 1) .. "?timeout=10s", line:sub(sp + 1)
    requests[n] = wrk.format("POST", path, headers, body)
  end
  i = offset or 0
end

function request()
  i = i + 1
  return requests[(i % n) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Run:
    """One wrk run against one target."""

    target: str
    connections: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return self.requests / self.seconds

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"{self.target:<8} c={self.connections:<3} {self.rate:8.1f} req/s  "
            f"p50 {self.p50_ms:6.2f} ms  p90 {self.p90_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  "
            f"max {self.max_ms:7.1f} ms  n={self.requests:<7} errors={self.errors}"
        )


def binary() -> str:
    """The wrk executable, or SystemExit saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench_webhook needs wrk: apt-get install -y wrk")
    return found


def write_inputs(workdir: Path, bodies: list[webhook_mix.Body]) -> tuple[Path, Path]:
    """The Lua script and the bodies file (one `path body` line each) wrk reads."""
    script, data = workdir / "mix.lua", workdir / "mix.txt"
    script.write_text(_SCRIPT)
    lines = []
    for b in bodies:
        if b"\n" in b.body or " " in b.path:
            raise ValueError("a body must be one line and a path one word")
        lines.append(b.path.encode() + b" " + b.body)
    data.write_bytes(b"\n".join(lines) + b"\n")
    return script, data


def run(
    target: str,
    port: int,
    inputs: tuple[Path, Path],
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
) -> Run:
    """wrk for `seconds` with `connections` keep-alive TLS connections to 127.0.0.1:`port`."""
    script, data = inputs
    argv = [
        binary(),
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=5s",
        f"--script={script}",
        f"https://127.0.0.1:{port}/",
        "--",
        str(data),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    result = next(
        (line for line in done.stdout.splitlines() if line.startswith("WRK-RESULT ")), None
    )
    if done.returncode != 0 or result is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    r = json.loads(result.removeprefix("WRK-RESULT "))
    errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Run(
        target=target,
        connections=connections,
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        errors=errors,
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
    )
