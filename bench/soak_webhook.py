"""Soak of the admission webhook: twice its benchmark's load for minutes; errors and memory.

The same stack as `bench.bench_webhook` (the harness's kube-apiserver and etcd, real OPA, the
webhook under gunicorn over TLS, 2 workers x 4 threads, log level info) and the same review
mix (bench/webhook_mix.py, 1,200 distinct reviews), sent by wrk with keep-alive TLS at 64
connections: twice the benchmark's highest load (32). A warm-up first (not counted), then
`--seconds` of load in chunks; between chunks the resident memory of the webhook (gunicorn's
arbiter and every worker, summed, from /proc) is sampled. Passes with zero errors (wrk's
connect, read, write, timeout and non-2xx counts, over every chunk) and a resident-memory
growth under 10% from the end of the warm-up to the end. Exit 0 passed, 1 failed.

    python -m bench.soak_webhook [--seconds 600] [--warmup 30] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client as k8s

from bench import bench_webhook, webhook_mix, wrk
from tests.e2e import webhook_stack
from tests.harness.controlplane import running_control_plane

MAX_GROWTH = 0.10
CHUNK = 30  # seconds of load between memory samples


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def webhook_rss_kib(arbiter: int) -> int:
    """Resident memory of gunicorn's arbiter and its workers, in KiB."""
    pids = [arbiter]
    for task in Path(f"/proc/{arbiter}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    return sum(_rss_kib(p) for p in pids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=600, help="counted load (default 600)")
    parser.add_argument("--warmup", type=int, default=30, help="uncounted load first (30)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    args = parser.parse_args(argv)
    wrk.binary()
    bodies = webhook_mix.build()
    env = {
        "GITWARDEN_WEBHOOK_WORKERS": "2",
        "GITWARDEN_WEBHOOK_THREADS": "4",
        "GITWARDEN_WEBHOOK_LOG_LEVEL": "info",
    }
    config = bench_webhook.CONFIG
    with (
        running_control_plane() as plane,
        tempfile.TemporaryDirectory(prefix="gitwarden-soak-") as tmp,
        webhook_stack.running_stack(plane, plane.admin(), Path(tmp), config, env) as stack,
    ):
        # The namespaces and Deployments the mix names, as the benchmark makes them.
        core, apps = k8s.CoreV1Api(plane.admin()), k8s.AppsV1Api(stack.gitops)
        for ns in webhook_mix.ENFORCED + webhook_mix.WARNED:
            core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]  # a manifest
        for ns, name in webhook_mix.SCALED:
            apps.create_namespaced_deployment(ns, webhook_stack.deployment(name))  # type: ignore[arg-type]
        assert stack.webhook.process is not None
        assert stack.webhook.process.popen is not None
        arbiter = stack.webhook.process.popen.pid
        inputs = wrk.write_inputs(Path(tmp), bodies)
        port, c = stack.webhook.port, args.connections
        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {len(bodies)} reviews;"
            f" {c} connections; warm-up {args.warmup} s, then {args.seconds} s",
            flush=True,
        )
        warm = wrk.run("webhook", port, inputs, connections=c, seconds=args.warmup)
        print(f"  warm-up  {warm.line()}", flush=True)
        start_rss = webhook_rss_kib(arbiter)
        samples = [start_rss]
        runs: list[wrk.Run] = []
        began = time.monotonic()
        left = args.seconds
        while left > 0:
            run = wrk.run("webhook", port, inputs, connections=c, seconds=min(CHUNK, left))
            left -= min(CHUNK, left)
            runs.append(run)
            samples.append(webhook_rss_kib(arbiter))
            print(f"  {run.line()}  rss {samples[-1] / 1024:.1f} MiB", flush=True)
        took = time.monotonic() - began
    requests = sum(r.requests for r in runs)
    errors = sum(r.errors for r in runs)
    growth = (samples[-1] - start_rss) / start_rss
    p99 = max(r.p99_ms for r in runs)
    print(
        f"soak: {requests} reviews in {took:.0f} s ({requests / took:.0f} req/s) at {c} "
        f"connections, errors {errors}, worst chunk p99 {p99:.1f} ms; webhook resident memory "
        f"{start_rss / 1024:.1f} MiB after warm-up -> {samples[-1] / 1024:.1f} MiB at the end "
        f"({100 * growth:+.1f}%, peak {max(samples) / 1024:.1f} MiB)"
    )
    passed = errors == 0 and growth < MAX_GROWTH
    print("PASSED" if passed else "FAILED: errors must be 0 and memory growth under 10%")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
