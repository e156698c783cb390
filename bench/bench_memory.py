"""Benchmark of the reconciler's resident memory while it manages 1,000 and 10,000 objects.

For each count, a fresh real stack (`bench.reconciler_runs`: kube-apiserver + etcd, OPA, the
webhook enforcing) and a signed repository of that many small ConfigMaps (plus their
Namespaces, 1,000 ConfigMaps each). The reconciler runs as its own process: once its first pass
is applied and its watches have listed every managed kind (one break-glass edit is reverted,
proving they are live), the bench reads VmRSS (now) and VmHWM (the peak, during the first
pass) from /proc/<pid>/status, after the RSS has held still for 3 s.

    python -m bench.bench_memory [--counts 1000,10000]

Target: VmRSS <= 150 MiB at 10,000 objects.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid

from kubernetes import client as k8s

from bench import reconciler_runs
from tests.e2e import reconcile_manifests as m

PER_NAMESPACE = 1000
TARGET_MIB, TARGET_COUNT = 150.0, 10_000
SETTLE, SETTLE_MAX = 3.0, 60.0


def settled_rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) once VmRSS has not grown by 1 MiB for SETTLE seconds (bounded)."""
    deadline = time.monotonic() + SETTLE_MAX
    last, since = reconciler_runs.memory(pid)[0], time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < SETTLE:
        time.sleep(0.25)
        now = reconciler_runs.memory(pid)[0]
        if now > last + 1.0:
            last, since = now, time.monotonic()
    return reconciler_runs.memory(pid)


def one_run(count: int, *, profile: bool) -> tuple[float, float, float]:
    """(VmRSS, VmHWM, seconds to the first applied pass) of a reconciler managing `count`."""
    with reconciler_runs.stack() as env:
        prefix, name = f"mem-{uuid.uuid4().hex[:6]}", f"bench-memory-{count}"
        namespaces = [f"{prefix}-{i}" for i in range(-(-count // PER_NAMESPACE))]
        repo = env.repo()
        repo.write("clusters/test/namespaces.yaml", [m.namespace(n) for n in namespaces])
        for i, ns in enumerate(namespaces):
            size = min(PER_NAMESPACE, count - i * PER_NAMESPACE)
            repo.write(
                f"clusters/test/{ns}.yaml",
                [m.configmap(ns, f"cm-{j:05d}", {"key": f"value-{j}"}) for j in range(size)],
            )
        commit = repo.commit(f"{count} ConfigMaps", "alice")
        log = env.workdir / f"reconciler-{count}.log"
        editor = k8s.CoreV1Api(env.stack.plane.client_for(env.stack.oncall_creds))
        settings = reconciler_runs.config_file(env, repo, name)
        with reconciler_runs.reconciler(settings, log, trace=profile) as child:
            took = reconciler_runs.wait_applied(env, name, commit, child, log, timeout=900)
            first = namespaces[0]
            editor.patch_namespaced_config_map(
                "cm-00000", first, {"data": {"key": "edited"}}, field_manager="kubectl-edit"
            )
            deadline = time.monotonic() + 60
            while editor.read_namespaced_config_map("cm-00000", first).data != {"key": "value-0"}:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the edit was never reverted:\n{log.read_text()[-4000:]}")
                time.sleep(0.05)
            rss, hwm = settled_rss(child.pid)
            if profile:
                child.send_signal(signal.SIGUSR1)
                deadline = time.monotonic() + 120  # the dump walks every live allocation
                while "tracemalloc:" not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(2)
                lines = log.read_text().splitlines(True)
                print("".join(line for line in lines if "MiB" in line))
    return rss, hwm, took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", default=f"1000,{TARGET_COUNT}")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="trace allocations in the reconciler (slower; RSS includes tracemalloc's own)",
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    subject = "gitwarden reconcile (loop)"
    print(f"reconciler: {subject}")
    results: dict[int, float] = {}
    for count in counts:
        rss, hwm, took = one_run(count, profile=args.profile)
        results[count] = rss
        print(
            f"objects {count:6d}  VmRSS {rss:6.1f} MiB  VmHWM {hwm:6.1f} MiB"
            f"  (first pass applied in {took:.0f} s)",
            flush=True,
        )
    if TARGET_COUNT not in results:
        print(f"target    VmRSS <= {TARGET_MIB:.0f} MiB at {TARGET_COUNT} objects (not run)")
        return 0
    ok = results[TARGET_COUNT] <= TARGET_MIB
    print(f"target    VmRSS <= {TARGET_MIB:.0f} MiB at {TARGET_COUNT} objects")
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
