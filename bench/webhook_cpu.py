"""CPU the webhook's own code spends per decision, apart from gunicorn, TLS and load.

Calls the webhook's WSGI application directly (as a gunicorn worker thread does once it has
read a request) with each of bench_webhook's 1,200 reviews, on one thread, against a real OPA
server with policies/admission and bench_webhook's configuration, with multiprocess metrics
and log level info into a buffered writer, as it is served. Parent lookups (the scale
route) answer a managed Deployment from memory: the cluster is not what is measured here.
It prints the CPU milliseconds per request of this process (Flask, parsing, the policy input,
the OPA client, metrics, logging) and of the OPA process, which on a machine shared with
other work are steadier figures than wall time. `--profile FILE` also writes cProfile's
statistics of the measured rounds and prints the top functions.

    python -m bench.webhook_cpu [--rounds 3] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _environ(path: str, body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "https",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def _round(
    app: Callable[..., Iterable[bytes]], bodies: list[tuple[str, bytes]]
) -> tuple[int, float]:
    """Post every body once; (requests, CPU seconds of this process)."""
    statuses: list[str] = []

    def start_response(status: str, _headers: list[tuple[str, str]], *_: Any) -> None:
        statuses.append(status)

    started = time.process_time()
    for path, body in bodies:
        for _chunk in app(_environ(path, body), start_response):
            pass
    spent = time.process_time() - started
    bad = [s for s in statuses if not s.startswith("200")]
    if bad:
        raise SystemExit(f"{len(bad)} answers were not 200: {bad[:3]}")
    return len(bodies), spent


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="passes over the mix (default 3)")
    parser.add_argument("--profile", type=Path, help="write cProfile statistics here")
    args = parser.parse_args(argv)
    metrics_dir = Path(tempfile.mkdtemp(prefix="gitwarden-bench-metrics-"))
    # As `gitwarden webhook serve` does: prometheus-client picks its multiprocess store on import.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from bench import bench_webhook, webhook_mix  # noqa: PLC0415 - after the variable above
    from tests.harness.services import OpaServer  # noqa: PLC0415
    from tests.webhook import fakes  # noqa: PLC0415
    from webhook import app as app_mod  # noqa: PLC0415
    from webhook import logbuffer  # noqa: PLC0415
    from webhook import settings as settings_mod  # noqa: PLC0415

    logging.basicConfig(
        level="INFO",
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=open(os.devnull, "w"),  # noqa: SIM115 - for the whole run
    )
    logbuffer.spare_caller_lookups()
    writers = logbuffer.install()
    bodies = [(b.path, b.body) for b in webhook_mix.build()]
    data = {"gitwarden": {"admission": bench_webhook.CONFIG.to_opa_data()}}
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="gitwarden-bench-cpu-") as tmp:
        opa = OpaServer(Path(tmp), data)
        opa.start()
        try:
            assert opa.process is not None
            assert opa.process.popen is not None
            opa_pid = opa.process.popen.pid
            settings = settings_mod.WebhookSettings(opa_url=opa.url, metrics_dir=metrics_dir)
            parents = fakes.FakeParents(labels=dict(webhook_mix.MANAGED))
            app = app_mod.create_app(settings, parents=parents, admission=bench_webhook.CONFIG)
            _round(app, bodies)  # warm up: connections, caches, OPA's first queries
            profiler = cProfile.Profile() if args.profile else None
            ours, theirs, n = [], [], 0
            for _ in range(args.rounds):
                opa_before = _cpu_seconds(opa_pid)
                if profiler:
                    profiler.enable()
                count, spent = _round(app, bodies)
                if profiler:
                    profiler.disable()
                ours.append(1000 * spent / count)
                theirs.append(1000 * (_cpu_seconds(opa_pid) - opa_before) / count)
                n += count
        finally:
            opa.stop()
            logbuffer.close(writers)
    mine, opas = (", ".join(f"{x:.3f}" for x in xs) for xs in (ours, theirs))
    print(f"{n} requests in {args.rounds} rounds; CPU ms per request: webhook {mine}; OPA {opas}")
    if profiler and args.profile:
        profiler.dump_stats(str(args.profile))
        out = io.StringIO()
        pstats.Stats(str(args.profile), stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
