"""A/B of the webhook's serving settings: variants of one webhook, one OPA, wrk in turn.

Starts one real OPA server (locked, as the chart runs it) with bench_webhook's configuration
and one `gitwarden webhook serve` per variant (each a set of GITWARDEN_WEBHOOK_* settings on
top of bench_webhook's: 2 workers x 4 threads, log level info), posts every review of
bench/webhook_mix.py once to each, then runs wrk over keep-alive TLS against the variants in
turn, `--rounds` times, and prints per run req/s, p50, p99, the CPU per request of the
variant's workers and OPA, and the share of requests the webhook's own histogram put over 5,
10 and 25 ms; then the medians. There is no API server: the parent lookups of the mix
(`kubectl scale` through /validate/parent) fail at once and are answered fail-closed, so this
measures serving without the lookups' round trips. 127.0.0.1 only; bounded by rounds x
seconds.

    python -m bench.webhook_ab --variant base: \\
        --variant two-threads:THREADS=2 --variant uncached:DECISION_CACHE=0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench import bench_webhook, webhook_mix, wrk
from tests.harness import pki
from tests.harness.controlplane import LOOPBACK
from tests.harness.services import CHART_DECISION_CACHE, OpaServer, WebhookServer


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """`name:KEY=VALUE,KEY=VALUE` (keys without the GITWARDEN_WEBHOOK_ prefix)."""
    name, _, rest = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"a variant needs a name: {text!r}")
    env = {}
    for pair in filter(None, rest.split(",")):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"not KEY=VALUE: {pair!r}")
        env[f"GITWARDEN_WEBHOOK_{key.upper()}"] = value
    return name, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant", type=_variant, action="append", required=True, help="name:KEY=VALUE,..."
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    wrk.binary()
    bodies = webhook_mix.build()
    with tempfile.TemporaryDirectory(prefix="gitwarden-bench-ab-") as tmp:
        work = Path(tmp)
        opa = OpaServer(work, {"gitwarden": {"admission": bench_webhook.CONFIG.to_opa_data()}})
        opa.start()
        ca = pki.CertificateAuthority("ca")
        serving = ca.serving([LOOPBACK])
        servers: dict[str, WebhookServer] = {}
        try:
            for name, env in args.variant:
                (work / name).mkdir()
                base = {
                    "GITWARDEN_WEBHOOK_OPA_URL": opa.url,
                    "GITWARDEN_WEBHOOK_WORKERS": "2",
                    "GITWARDEN_WEBHOOK_THREADS": "4",
                    "GITWARDEN_WEBHOOK_LOG_LEVEL": "info",
                    "GITWARDEN_WEBHOOK_DECISION_CACHE": CHART_DECISION_CACHE,
                }
                servers[name] = WebhookServer(work / name, serving, ca.cert_pem, {**base, **env})
                servers[name].start()
                print(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items()) or '(defaults)'}")
            for server in servers.values():
                bench_webhook._answer_every_body(server.port, server.tls_context(), bodies)
            inputs = wrk.write_inputs(work, bodies)
            _rounds(args, servers, opa, inputs)
        finally:
            for server in servers.values():
                server.stop()
            opa.stop()
    return 0


def _rounds(
    args: argparse.Namespace,
    servers: dict[str, WebhookServer],
    opa: OpaServer,
    inputs: tuple[Path, Path],
) -> None:
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, server in servers.items():
            pids = bench_webhook._children(server.process.popen.pid)  # type: ignore[union-attr]
            pids.append(opa.process.popen.pid)  # type: ignore[union-attr]
            cpu = sum(bench_webhook._cpu_seconds(p) for p in pids)
            before = bench_webhook.scrape(bench_webhook.metrics_text(server))
            run = wrk.run(
                name, server.port, inputs, connections=args.connections, seconds=args.seconds
            )
            after = bench_webhook.scrape(bench_webhook.metrics_text(server))
            per_request = (
                1000
                * (sum(bench_webhook._cpu_seconds(p) for p in pids) - cpu)
                / max(run.requests, 1)
            )
            shares = bench_webhook.own_time(before, after)
            print(f"  {run.line()}  cpu/req {per_request:.3f} ms; in the app: {shares}", flush=True)
            runs[name].append((run.rate, run.p99_ms, per_request))
    for name, measured in runs.items():
        p99s = [m[1] for m in measured]
        print(
            f"{name:<14} median {statistics.median(m[0] for m in measured):7.0f} req/s, "
            f"p99 median {statistics.median(p99s):.1f} ms "
            f"(spread {min(p99s):.1f}-{max(p99s):.1f}), "
            f"cpu/req {statistics.median(m[2] for m in measured):.3f} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
