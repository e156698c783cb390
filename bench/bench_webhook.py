"""Load benchmark of the admission webhook over TLS on loopback, against a fixed-allow baseline.

Starts a real OPA server with policies/admission, the webhook under `gitwarden webhook serve`
(gunicorn, TLS, 2 workers x 4 threads by default), and a minimal gunicorn TLS app that answers
a fixed allow with the same worker settings. The same client load (persistent TLS connections,
one realistic AdmissionReview: a user's update of a managed Deployment, which the policy
denies) is sent to each in turn, bounded in count and time. It prints p50/p95/p99 latency and
throughput for both and their ratios.

    python -m bench.bench_webhook [--requests 3000] [--clients 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness import pki
from tests.harness.controlplane import LOOPBACK, Process, free_port, wait_http
from tests.harness.services import OpaServer, WebhookServer
from tests.webhook import reviews
from webhook import config as config_mod


@dataclass(frozen=True)
class Result:
    """Latencies (seconds) and wall time of one run."""

    name: str
    latencies: list[float]
    wall: float
    errors: int

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall

    def line(self) -> str:
        ms = [self.percentile(p) * 1000 for p in (50, 95, 99)]
        return (
            f"{self.name:<10} n={len(self.latencies):<6} errors={self.errors:<3} "
            f"p50={ms[0]:6.2f} ms  p95={ms[1]:6.2f} ms  p99={ms[2]:6.2f} ms  "
            f"throughput={self.throughput:7.1f} req/s  "
            f"mean={statistics.fmean(self.latencies) * 1000:.2f} ms"
        )


def load(
    name: str,
    port: int,
    ca: ssl.SSLContext,
    body: bytes,
    *,
    requests: int,
    clients: int,
    seconds: float,
) -> Result:
    """`clients` threads with one keep-alive TLS connection each share `requests` POSTs."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPSConnection(LOOPBACK, port, context=ca, timeout=10)
        mine: list[float] = []
        try:
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        break
                    remaining[0] -= 1
                started = time.perf_counter()
                try:
                    conn.request(
                        "POST", "/validate?timeout=3s", body, {"Content-Type": "application/json"}
                    )
                    resp = conn.getresponse()
                    ok = resp.status == 200 and b'"response"' in resp.read()
                except (OSError, http.client.HTTPException):
                    ok = False
                if not ok:
                    with lock:
                        errors[0] += 1
                    conn.close()
                    conn = http.client.HTTPSConnection(LOOPBACK, port, context=ca, timeout=10)
                    continue
                mine.append(time.perf_counter() - started)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Result(name, latencies, time.perf_counter() - started, errors[0])


def _check_denies(port: int, context: ssl.SSLContext, body: bytes) -> None:
    """The webhook must really decide (a deny with our message) before it is timed."""
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context)
    conn.request("POST", "/validate", body, {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())["response"]
    conn.close()
    if answer["allowed"] or "Make the change in Git" not in answer["status"]["message"]:
        raise SystemExit(f"webhook did not deny as expected: {answer}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="requests per target (default 3000)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument(
        "--seconds", type=float, default=60, help="time bound per target (default 60)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    ca = pki.CertificateAuthority("bench-ca")
    serving = ca.serving([LOOPBACK, "localhost"])
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    case = reviews.golden()["cases"]["user_update_deployment_denied"]["input"]
    body = reviews.body(reviews.review_from_input(case))
    config = config_mod.AdmissionConfig(
        repository_url="https://git.example.com/platform/cluster.git"
    )

    with tempfile.TemporaryDirectory(prefix="gitwarden-bench-") as tmp:
        work = Path(tmp)
        opa = OpaServer(work, {"gitwarden": {"admission": config.to_opa_data()}})
        webhook = WebhookServer(
            work,
            serving,
            ca.cert_pem,
            env={
                "GITWARDEN_WEBHOOK_OPA_URL": "",
                "GITWARDEN_WEBHOOK_WORKERS": str(args.workers),
                "GITWARDEN_WEBHOOK_THREADS": str(args.threads),
                "GITWARDEN_WEBHOOK_LOG_LEVEL": "warning",
            },
        )
        crt, key = serving.write(work, "baseline")
        baseline_port = free_port()
        baseline = Process(
            "baseline",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"{LOOPBACK}:{baseline_port}",
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
                "--worker-class",
                "gthread",
                "--certfile",
                str(crt),
                "--keyfile",
                str(key),
                "--keep-alive",
                "30",
                "--log-level",
                "warning",
                "bench.baseline_app:app",
            ],
            work / "baseline.log",
            env={**os.environ},
        )
        try:
            opa.start()
            webhook.env["GITWARDEN_WEBHOOK_OPA_URL"] = opa.url
            webhook.start()
            baseline.start()
            wait_http(baseline, f"https://{LOOPBACK}:{baseline_port}/", context=context)
            _check_denies(webhook.port, context, body)
            warmup = {"requests": 200, "clients": args.clients, "seconds": 10.0}
            load("warmup", webhook.port, context, body, **warmup)
            load("warmup", baseline_port, context, body, **warmup)
            bounds = {"requests": args.requests, "clients": args.clients, "seconds": args.seconds}
            results = [
                load("webhook", webhook.port, context, body, **bounds),
                load("baseline", baseline_port, context, body, **bounds),
            ]
        finally:
            baseline.stop()
            webhook.stop()
            opa.stop()

    hook, base = results
    print(
        f"{len(body)}-byte AdmissionReview, {args.clients} keep-alive TLS clients, "
        f"{args.workers} workers x {args.threads} threads, loopback, {os.cpu_count()} CPUs"
    )
    for r in results:
        print(r.line())
    print(
        f"ratio webhook/baseline: throughput {hook.throughput / base.throughput:.2f}x, "
        f"p50 {hook.percentile(50) / base.percentile(50):.2f}x, "
        f"p99 {hook.percentile(99) / base.percentile(99):.2f}x"
    )
    return 1 if hook.errors or base.errors else 0


if __name__ == "__main__":
    sys.exit(main())
