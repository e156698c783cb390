"""What one admission decision costs OPA: the policy's evaluation time on the webhook's mix.

Turns each of bench_webhook's 1,200 reviews (bench/webhook_mix.py) into the policy input the
webhook sends (review.parse and review.policy_input; for the parent route the parent is a
managed Deployment, as in bench_webhook's cluster), starts a real OPA server with
policies/admission and bench_webhook's configuration, and posts every input `--rounds` times
on one kept-alive connection with `?metrics=true`. It prints OPA's own timers per decision
(`timer_rego_query_eval_ns`: the policy's evaluation; `timer_server_handler_ns`: the whole
HTTP handler, input parsing included), by kind of review, plus the CPU the OPA process spent
per decision. OPA runs with the chart's Go runtime settings (`webhook.opa.go`: GOGC,
GOMEMLIMIT) unless `--go-defaults` is given; `--opa-flag` (repeatable) starts it with
more `opa run` flags (such as `--optimize-store-for-read-speed`), to measure what a deployment
setting buys. `--write DIR` also writes the inputs and the data document there, for
`opa eval --profile` and `opa bench`. 127.0.0.1 only; bounded by the
number of rounds.

    python -m bench.bench_policy [--rounds 5] [--go-defaults] [--opa-flag FLAG ...] [--write DIR]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import bench_webhook, webhook_mix
from tests.harness.controlplane import LOOPBACK, Process, free_port, tool, wait_http
from tests.harness.services import OPA_ENV, POLICY_DIR
from webhook import review

DECISION = "/v1/data/admission/decision?metrics=true"
_PARENT = review.ObjectMeta(labels=dict(webhook_mix.MANAGED), annotations={})


def inputs(bodies: list[webhook_mix.Body]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, policy input) for every body, as the webhook builds them."""
    keys = frozenset({webhook_mix.PATH_ANNOTATION})
    built = []
    for body in bodies:
        req = review.parse(body.body, keys)
        if body.path == "/validate/parent":
            req = dataclasses.replace(req, object=_PARENT, old_object=_PARENT)
        built.append((body.kind, review.policy_input(req, namespace_protected=False)))
    return built


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port: int, pid: int, mix: list[tuple[str, dict[str, Any]]], rounds: int) -> str:
    """Post every input `rounds` times; OPA's timers per kind and its CPU per decision."""
    encoded = [(kind, json.dumps({"input": inp}).encode()) for kind, inp in mix]
    evals: dict[str, list[int]] = collections.defaultdict(list)
    handler: list[int] = []
    verdicts: collections.Counter[str] = collections.Counter()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    cpu_before = _cpu_seconds(pid)
    try:
        for r in range(rounds):
            for kind, body in encoded:
                conn.request("POST", DECISION, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = json.loads(resp.read())
                if resp.status != 200 or "result" not in answer:
                    raise SystemExit(f"{kind}: OPA answered {resp.status}: {answer}")
                metrics = answer["metrics"]
                evals[kind].append(int(metrics["timer_rego_query_eval_ns"]))
                handler.append(int(metrics["timer_server_handler_ns"]))
                if r == 0:
                    verdicts[f"{kind}: {answer['result']['reason']}"] += 1
    finally:
        conn.close()
    cpu_ms = 1000 * (_cpu_seconds(pid) - cpu_before) / (rounds * len(encoded))
    every = [ns for values in evals.values() for ns in values]
    lines = [f"  {n:5d}  {v}" for v, n in sorted(verdicts.items())]
    lines.append(f"policy evaluation (timer_rego_query_eval_ns), {rounds} rounds of {len(mix)}:")
    for kind, values in sorted(evals.items()):
        lines.append(
            f"  {kind:32s} median {statistics.median(values) / 1000:7.1f} us"
            f"  (p90 {statistics.quantiles(values, n=10)[-1] / 1000:7.1f} us)"
        )
    lines.append(
        f"  {'the whole mix':32s} median {statistics.median(every) / 1000:7.1f} us, "
        f"mean {statistics.fmean(every) / 1000:7.1f} us"
    )
    lines.append(
        f"OPA's HTTP handler per decision: median {statistics.median(handler) / 1000:.1f} us; "
        f"OPA process CPU per decision: {cpu_ms:.3f} ms"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="passes over the mix (default 5)")
    parser.add_argument("--write", type=Path, help="also write inputs.json and data.json here")
    parser.add_argument(
        "--opa-flag", action="append", default=[], help="one more `opa run` flag (repeatable)"
    )
    parser.add_argument(
        "--go-defaults",
        action="store_true",
        help="run OPA with Go's default runtime settings instead of the chart's (webhook.opa.go)",
    )
    args = parser.parse_args(argv)
    mix = inputs(webhook_mix.build())
    data = {"gitwarden": {"admission": bench_webhook.CONFIG.to_opa_data()}}
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "data.json").write_text(json.dumps(data))
        (args.write / "inputs.json").write_text(json.dumps([inp for _, inp in mix]))
        for kind, inp in {kind: inp for kind, inp in mix}.items():
            (args.write / f"input-{kind}.json").write_text(json.dumps(inp))
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="gitwarden-bench-policy-") as tmp:
        data_file, port = Path(tmp) / "data.json", free_port()
        data_file.write_text(json.dumps(data))
        argv = [str(tool("opa")), "run", "--server", f"--addr={LOOPBACK}:{port}"]
        argv += ["--log-level=error", *args.opa_flag, str(POLICY_DIR), str(data_file)]
        flags = " ".join(args.opa_flag) or "(none)"
        go = {} if args.go_defaults else OPA_ENV
        runtime = " ".join(f"{k}={v}" for k, v in go.items()) or "Go's defaults"
        print(f"opa run flags: {flags}; runtime: {runtime}")
        server = Process("opa", argv, Path(tmp) / "opa.log", env={**os.environ, **go})
        server.start()
        try:
            wait_http(server, f"http://{LOOPBACK}:{port}/health")
            assert server.popen is not None
            measure(port, server.popen.pid, mix, 1)  # warm up
            print(measure(port, server.popen.pid, mix, args.rounds))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
