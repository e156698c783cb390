"""Load benchmark of the admission webhook: alone next to its floor, then through kube-apiserver.

Starts the harness's kube-apiserver and etcd, a real OPA server with policies/admission, and
the webhook under `gitwarden webhook serve` (gunicorn, TLS, 2 workers x 4 threads, log level
info, the chart's decision cache: as in production), registered in the API server, a second
webhook like it with the decision cache off (every decision asked of the same OPA), plus the
floor: a minimal WSGI app that parses the JSON and answers allow, under gunicorn with the same
workers, threads and keep-alive (plain gthread). Then:

1. wrk (keep-alive TLS) sends a varied mix of 1,200 distinct reviews (bench/webhook_mix.py:
   5 KB Deployments with managedFields, ConfigMaps, status writes, scale through the parent
   route, controllers' writes; 24 users, 9 namespaces) to the floor, the webhook and the webhook
   without its cache in turn, at 8 and 32 connections, `--repeats` times interleaved; req/s,
   p50/p99 and the ratios, with the spread over the repeats, and the cache's hit rate (from
   the webhook's /metrics). Each worker keeps its own cache, so before the measured runs an
   unmeasured warm-up (`--warm-up` seconds of wrk at 8 connections) lets both workers see
   every input; the misses it and the runs had are printed. The cached webhook shows
   repeats, the uncached one what a first sight costs.
2. Through the API server: the latency the webhook adds to people's in-scope UPDATEs at 8
   concurrent clients (the API server's own admission histogram), and the webhook calls that
   the GitOps identity's writes and the deployment controller's status writes cause (zero).

Every body is first posted once to both servers and must be answered 200 for its uid. Bounded
in time; 127.0.0.1 only. Targets are printed, not asserted (a 2-core machine shared with other
work is noisy).

    python -m bench.bench_webhook [--seconds 8] [--repeats 3] [--profile DIR]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client as k8s

from bench import pyspy, webhook_apiserver, webhook_mix, wrk
from tests.e2e import webhook_stack
from tests.harness import pki
from tests.harness.controlplane import (
    LOOPBACK,
    Process,
    free_port,
    running_control_plane,
    wait_http,
)
from tests.harness.services import WebhookServer
from webhook import config as config_mod
from webhook import registration

# The floor's registration beside the webhook's in part 2 (its hooks are managed.<this>...).
FLOOR_HOOKS = "benchfloor"
LOOKUPS = "gitwarden_webhook_lookup_duration_seconds"
SERVED = "apiserver_request_duration_seconds"
CONFIG = config_mod.AdmissionConfig(
    namespace=webhook_stack.GITOPS_NS,
    gitops_service_account=webhook_stack.GITOPS_SA,
    repository_url=webhook_stack.REPO,
    break_glass_groups=(webhook_stack.BREAK_GLASS,),
    namespace_modes={ns: "warn" for ns in webhook_mix.WARNED},
)


def _floor(work: Path, serving: pki.KeyPair, workers: int, threads: int) -> tuple[Process, int]:
    crt, key = serving.write(work, "floor")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", f"--bind={LOOPBACK}:{port}", f"--workers={workers}"]
    argv += [f"--threads={threads}", "--worker-class=gthread", f"--certfile={crt}"]
    argv += [f"--keyfile={key}", "--keep-alive=30", "--log-level=warning"]
    argv += ["bench.baseline_app:app"]
    return Process("floor", argv, work / "floor.log", env={**os.environ}), port


def _answer_every_body(
    port: int, context: ssl.SSLContext, bodies: list[webhook_mix.Body]
) -> collections.Counter[str]:
    """Post each body once on one kept-alive connection; each must be a 200 for its uid."""
    verdicts: collections.Counter[str] = collections.Counter()
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=10)
    try:
        for b in bodies:
            conn.request("POST", b.path, b.body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{b.kind}: HTTP {resp.status}: {raw[:300]!r}")
            answer = json.loads(raw)["response"]
            if answer["uid"] != json.loads(b.body)["request"]["uid"]:
                raise SystemExit(f"{b.kind}: answered for another uid")
            warned = " (warned)" if answer.get("warnings") else ""
            verdicts[f"{b.kind}: {'allowed' if answer['allowed'] else 'denied'}{warned}"] += 1
    finally:
        conn.close()
    return verdicts


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """gunicorn's workers: the children of its arbiter."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _median(runs: list[wrk.Run], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in runs))


def _spread(runs: list[wrk.Run]) -> str:
    rates = [r.rate for r in runs]
    p99s = [r.p99_ms for r in runs]
    return (
        f"median {statistics.median(rates):7.1f} req/s (spread {min(rates):.0f}-{max(rates):.0f}), "
        f"p50 median {statistics.median(r.p50_ms for r in runs):.2f} ms, "
        f"p99 median {statistics.median(p99s):.2f} ms (spread {min(p99s):.2f}-{max(p99s):.2f}), "
        f"errors {sum(r.errors for r in runs)}"
    )


def _measured(
    target: str,
    port: int,
    *,
    inputs: tuple[Path, Path],
    connections: int,
    seconds: int,
    processes: dict[str, list[int]],
    cpu: dict[str, list[float]],
) -> wrk.Run:
    """One wrk run, and the CPU milliseconds per request each process group spent on it."""
    before = {name: sum(_cpu_seconds(p) for p in pids) for name, pids in processes.items()}
    run = wrk.run(target, port, inputs, connections=connections, seconds=seconds)
    for name, pids in processes.items():
        spent = sum(_cpu_seconds(p) for p in pids) - before[name]
        cpu[f"{name} c={connections}"].append(1000 * spent / max(run.requests, 1))
    return run


def _cache_misses(server: WebhookServer) -> float:
    """The decision cache's misses so far, summed over the workers."""
    return scrape(metrics_text(server))["miss"]


def metrics_text(server: WebhookServer) -> str:
    """The webhook's /metrics exposition."""
    conn = http.client.HTTPSConnection(
        LOOPBACK, server.port, context=server.tls_context(), timeout=10
    )
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def scrape(text: str) -> dict[str, float]:
    """The webhook's decision-cache counters by result and its own latency buckets (by `le`)."""
    found: dict[str, float] = collections.defaultdict(float)
    prefixes = {
        'gitwarden_webhook_decision_cache_total{result="': "",
        'gitwarden_webhook_request_duration_seconds_bucket{le="': "le ",
    }
    for line in text.splitlines():
        for prefix, tag in prefixes.items():
            if line.startswith(prefix):
                name = tag + line[len(prefix) :].split('"', 1)[0]
                found[name] += float(line.rsplit(" ", 1)[1])
    return found


def own_time(before: dict[str, float], after: dict[str, float]) -> str:
    """What the webhook's own histogram says of the requests between two scrapes."""
    total = after["le +Inf"] - before["le +Inf"]
    over = [
        f"{100 * (1 - (after[f'le {le}'] - before[f'le {le}']) / max(total, 1)):.2f}% over "
        f"{float(le) * 1000:g} ms"
        for le in ("0.005", "0.01", "0.025")
    ]
    return f"{total:.0f} requests, " + ", ".join(over)


def _part_one(
    args: argparse.Namespace,
    stack: webhook_stack.Stack,
    uncached: WebhookServer,
    *,
    floor_pid: int,
    floor_port: int,
    inputs: tuple[Path, Path],
) -> list[str]:
    verdicts: list[str] = []
    results: dict[tuple[str, int], list[wrk.Run]] = collections.defaultdict(list)
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    opa = [stack.opa.process.popen.pid]  # type: ignore[union-attr]
    # The parent lookups' cost on the other side: the API server and its etcd, which share
    # the two cores with everything else (the floor makes no lookups).
    plane = [
        p.popen.pid  # type: ignore[union-attr]
        for p in (stack.plane.apiserver, stack.plane.etcd)
        if p is not None
    ]
    groups = {
        "floor": {"floor workers": _children(floor_pid), "API server + etcd (floor)": plane},
        "webhook": {
            "webhook workers": _children(stack.webhook.process.popen.pid),  # type: ignore[union-attr]
            "OPA": opa,
            "API server + etcd": plane,
        },
        "uncached": {
            "uncached workers": _children(uncached.process.popen.pid),  # type: ignore[union-attr]
            "OPA (uncached)": opa,
            "API server + etcd (uncached)": plane,
        },
    }
    targets = (
        ("floor", floor_port),
        ("webhook", stack.webhook.port),
        ("uncached", uncached.port),
    )
    servers = (("webhook", stack.webhook), ("uncached", uncached))
    texts = {name: metrics_text(server) for name, server in servers}
    served_before = webhook_apiserver.scrape(stack.plane.admin())
    scraped = {name: scrape(text) for name, text in texts.items()}
    for connections in (8, 32):
        for _ in range(args.repeats):
            for target, port in targets:
                run = _measured(
                    target,
                    port,
                    inputs=inputs,
                    connections=connections,
                    seconds=args.seconds,
                    processes=groups[target],
                    cpu=cpu,
                )
                print("  " + run.line(), flush=True)
                results[(target, connections)].append(run)
    texts_after = {name: metrics_text(server) for name, server in servers}
    served_after = webhook_apiserver.scrape(stack.plane.admin())
    after = {name: scrape(text) for name, text in texts_after.items()}
    for name, _ in servers:
        # Time inside the app (parse, lookups, decision, answer), against wrk's round trip.
        print(f"the {name}'s own histogram over these runs: {own_time(scraped[name], after[name])}")
        # The parents behind `kubectl scale`: a GET of the API server each, inside that time.
        lookups = webhook_apiserver.histogram(
            texts[name], texts_after[name], LOOKUPS, {"read": "object"}
        )
        print(_histogram_line(f"the {name}'s parent lookups", lookups))
    # The same GETs as the API server times them (from its handler's start to its answer): what
    # the lookups wait for beyond it is the webhook's (a thread, the interpreter, TLS).
    served = webhook_apiserver.histogram(
        served_before, served_after, SERVED, {"verb": "GET", "resource": "deployments"}
    )
    print(_histogram_line("the API server's own time for those GETs (both webhooks)", served))
    cache = {
        k: v - scraped["webhook"].get(k, 0.0)
        for k, v in after["webhook"].items()
        if not k.startswith("le ")
    }
    asked = sum(cache.values())
    print(
        "the webhook's decision cache over these runs: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(cache.items()))
        + f" (hit rate {100 * cache.get('hit', 0.0) / max(asked, 1):.1f}%)"
    )
    print("CPU milliseconds per request (median over the runs; all processes of each kind):")
    for name, values in cpu.items():
        print(f"  {name:<22} {statistics.median(values):.2f} ms")
    print()
    for connections in (8, 32):
        floor = results[("floor", connections)]
        print(f"{connections} connections, {args.repeats} runs of {args.seconds} s each:")
        print(f"  floor    {_spread(floor)}")
        for target, label in (("webhook", "webhook"), ("uncached", "webhook, cache off")):
            hook = results[(target, connections)]
            print(f"  {target:<8} {_spread(hook)}")
            ratios = [h.rate / f.rate for h, f in zip(hook, floor, strict=True)]
            ratio = statistics.median(r.rate for r in hook) / statistics.median(
                r.rate for r in floor
            )
            p99 = statistics.median(r.p99_ms for r in hook)
            print(
                f"  ratio {target}/floor: req/s {ratio:.2f}x "
                f"(per run {', '.join(f'{r:.2f}' for r in ratios)}), "
                f"p50 {_median(hook, 'p50_ms') / _median(floor, 'p50_ms'):.1f}x, "
                f"p99 {p99 / _median(floor, 'p99_ms'):.1f}x"
            )
            if connections == 8:
                verdicts.append(
                    _target(
                        f"{label}, 8 connections: >= 0.25x the floor",
                        ratio >= 0.25,
                        f"{ratio:.2f}x",
                    )
                )
                verdicts.append(
                    _target(f"{label}, 8 connections: p99 <= 10 ms", p99 <= 10, f"{p99:.2f} ms")
                )
            else:
                errors = sum(r.errors for r in hook)
                verdicts.append(
                    _target(f"{label}, 32 connections: 0 errors", errors == 0, str(errors))
                )
                verdicts.append(
                    _target(f"{label}, 32 connections: p99 <= 50 ms", p99 <= 50, f"{p99:.2f} ms")
                )
    return verdicts


def _histogram_line(what: str, h: webhook_apiserver.Histogram) -> str:
    return (
        f"  {what}: n={h.count:.0f}, p50 ~{h.quantile(0.5) * 1000:.2f} ms, "
        f"p99 ~{h.quantile(0.99) * 1000:.2f} ms, {100 * h.share_within(0.005):.1f}% within 5 ms"
    )


def _register_floor(stack: webhook_stack.Stack, floor_port: int) -> str:
    """The floor as a second webhook with GitWarden's rules and conditions; its hook's name."""
    floor = registration.validating_webhook_configuration(
        CONFIG, {"url": f"https://{LOOPBACK}:{floor_port}"}, name=FLOOR_HOOKS
    )
    stack.plane.register_validating_webhook(floor)
    hook = f"managed.{FLOOR_HOOKS}.gitwarden.dev"
    admin, apps = stack.plane.admin(), k8s.AppsV1Api(stack.alice)
    ns, name = webhook_mix.WARNED[0], "edit-0"
    for n in range(300):  # the API server loads configurations asynchronously
        apps.patch_namespaced_deployment(name, ns, {"spec": {"replicas": n % 3 + 1}})
        metrics = webhook_apiserver.scrape(admin)
        if webhook_apiserver.total(metrics, webhook_apiserver.CALLS, {"name": hook}):
            return hook
        time.sleep(0.1)
    raise SystemExit("the API server never called the floor webhook")


def _part_two(stack: webhook_stack.Stack, clients: int, each: int, floor_port: int) -> list[str]:
    enforced, warned = webhook_mix.ENFORCED[5], webhook_mix.WARNED[0]
    added = webhook_apiserver.human_updates(stack, (enforced, warned), clients, each)
    h, w = added.api_server, added.webhook
    print(
        f"{added.requests} people's UPDATEs of managed Deployments ({clients} clients, half "
        f"denied, half warned) in {added.seconds:.1f} s: {added.requests / added.seconds:.1f} req/s"
    )
    print("  (the API server's buckets end at 5, 25 and 100 ms: quantiles are interpolated)")
    print(_histogram_line("API server's histogram for the webhook", h))
    print(_histogram_line("the webhook's own histogram meanwhile", w))
    # The floor registered beside the webhook: the API server calls both for each request, in
    # parallel, so the two histograms share requests, minutes and the API server's own delays.
    floor_hook = _register_floor(stack, floor_port)
    try:
        # At the bench's clients, then at one (the API server and etcd left mostly idle).
        pair, alone = (
            webhook_apiserver.human_updates(
                stack, (enforced, warned), n, rounds, prefix=prefix, floor_hook=floor_hook
            )
            for n, rounds, prefix in ((clients, each, "pair"), (1, each * 2, "single"))
        )
    finally:
        stack.plane.delete_validating_webhook(FLOOR_HOOKS)
    assert pair.floor is not None
    for run in (pair, alone):
        assert run.floor is not None
        print(
            f"{run.requests} more UPDATEs by {run.clients} client(s) with the floor registered "
            f"beside the webhook (both called for each): {run.requests / run.seconds:.1f} req/s"
        )
        print(_histogram_line("API server's histogram for the webhook", run.api_server))
        print(_histogram_line("API server's histogram for the floor  ", run.floor))
    verdicts = [
        _target(
            "API server: p99 added <= 5 ms at 8 clients",
            h.share_within(0.005) >= 0.99,
            f"{100 * h.share_within(0.005):.1f}% within 5 ms "
            f"(the floor beside it: {100 * pair.floor.share_within(0.005):.1f}%)",
        )
    ]
    namespace, name = webhook_mix.SCALED[0]
    for skipped in (
        webhook_apiserver.gitops_writes(stack, namespace, 200),
        webhook_apiserver.controller_status_writes(stack, namespace, name, 200),
    ):
        print(
            f"  {skipped.who}: {skipped.writes} writes, "
            f"webhook decisions {skipped.webhook_decisions:.0f}, "
            f"API server calls to the webhook {skipped.api_server_calls:.0f}, "
            f"excluded by matchConditions {skipped.api_server_exclusions:.0f}"
        )
        calls = skipped.webhook_decisions + skipped.api_server_calls
        verdicts.append(_target(f"zero webhook calls: {skipped.who}", calls == 0, f"{calls:.0f}"))
    return verdicts


def _target(what: str, met: bool, value: str) -> str:
    return f"{'MET   ' if met else 'MISSED'} {what}: {value}"


def _setup_cluster(stack: webhook_stack.Stack) -> None:
    core, apps = k8s.CoreV1Api(stack.plane.admin()), k8s.AppsV1Api(stack.gitops)
    for ns in webhook_mix.ENFORCED + webhook_mix.WARNED:
        core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]  # a manifest
    for ns, name in webhook_mix.SCALED:
        apps.create_namespaced_deployment(ns, webhook_stack.deployment(name))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=3,
        help="seconds of unmeasured wrk against the cached webhook first, so that both workers "
        "have seen every input (default 3; 0: none, the first run then has the misses)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per target and load (default 3)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8, help="API server clients (default 8)")
    parser.add_argument("--updates", type=int, default=150, help="UPDATEs per API server client")
    parser.add_argument("--profile", type=Path, help="also sample the webhook with py-spy into DIR")
    args = parser.parse_args(argv)
    wrk.binary()
    if args.profile:
        pyspy.binary()
    bodies = webhook_mix.build()
    print(
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{len(bodies)} distinct reviews, "
        f"{sum(len(b.body) for b in bodies) // len(bodies)} bytes on average; "
        f"{args.workers} workers x {args.threads} threads",
        flush=True,
    )
    env = {
        "GITWARDEN_WEBHOOK_WORKERS": str(args.workers),
        "GITWARDEN_WEBHOOK_THREADS": str(args.threads),
        "GITWARDEN_WEBHOOK_LOG_LEVEL": "info",
    }
    with (
        running_control_plane() as plane,
        tempfile.TemporaryDirectory(prefix="gitwarden-bench-") as tmp,
        webhook_stack.running_stack(plane, plane.admin(), Path(tmp), CONFIG, env) as stack,
    ):
        work = Path(tmp)
        _setup_cluster(stack)
        floor, floor_port = _floor(work, stack.webhook.serving, args.workers, args.threads)
        (work / "uncached").mkdir()
        uncached = WebhookServer(
            work / "uncached",
            stack.webhook.serving,
            stack.webhook.ca_pem,
            env={**stack.webhook.env, "GITWARDEN_WEBHOOK_DECISION_CACHE": "0"},
        )
        floor.start()
        uncached.start()
        try:
            context = stack.webhook.tls_context()
            wait_http(floor, f"https://{LOOPBACK}:{floor_port}/", context=context)
            print("answers of the webhook to the mix (each body once):")
            answers = _answer_every_body(stack.webhook.port, context, bodies)
            for verdict, n in sorted(answers.items()):
                print(f"  {n:5d}  {verdict}")
            if _answer_every_body(uncached.port, context, bodies) != answers:
                raise SystemExit("the webhook without its cache answered the mix differently")
            _answer_every_body(floor_port, context, bodies)
            inputs = wrk.write_inputs(work, bodies)
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                out = args.profile / "webhook-c8.txt"
                spy = pyspy.start(stack.webhook.process.popen.pid, args.seconds, out)  # type: ignore[union-attr]
                print(
                    "  (profiled) "
                    + wrk.run(
                        "webhook", stack.webhook.port, inputs, connections=8, seconds=args.seconds
                    ).line()
                )
                spy.wait(timeout=args.seconds + 60)
                print(pyspy.summary(out))
            if args.warm_up:
                misses = _cache_misses(stack.webhook)
                wrk.run("webhook", stack.webhook.port, inputs, connections=8, seconds=args.warm_up)
                print(
                    f"warm-up ({args.warm_up} s of wrk, not measured): "
                    f"{_cache_misses(stack.webhook) - misses:.0f} cache misses, both workers"
                )
            print("\n1. the webhook alone, next to the floor (wrk, keep-alive TLS):", flush=True)
            verdicts = _part_one(
                args,
                stack,
                uncached,
                floor_pid=floor.popen.pid,  # type: ignore[union-attr]
                floor_port=floor_port,
                inputs=inputs,
            )
            print("\n2. through the API server:", flush=True)
            verdicts += _part_two(stack, args.clients, args.updates, floor_port)
        finally:
            uncached.stop()
            floor.stop()
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("targets:")
    for v in verdicts:
        print(f"  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
