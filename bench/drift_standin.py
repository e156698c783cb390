"""A stand-in for `gitwarden reconcile --config F` (the loop) while its controller is not merged.

One pass (`pipeline.reconcile`, the Sync status written), then the product's `Watches` and
`Repairer` with one worker thread handling events in order, until SIGTERM. It is what the
controller does between passes, so the benches measure the same code paths in a process of
their own; once `reconciler.controller` exists the benches run the real command instead.

    python -m bench.drift_standin --config FILE
"""

from __future__ import annotations

import argparse
import datetime as dt
import queue
import signal
import sys
import threading
import tracemalloc
import types
from pathlib import Path

from reconciler import config, drift, pipeline, status, watches, wiring


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = config.load(args.config)
    process = wiring.build(settings, None)
    stop = threading.Event()

    def stopping(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC set by `bench_memory --profile`
        signal.signal(signal.SIGUSR1, _dump_allocations)
    name = settings.identity.name
    applied = pipeline.reconcile(process.ports, settings, None, dt.datetime.now(dt.UTC))
    process.target.write_status(
        name, status.succeeded(applied.plan, applied.changes), dt.datetime.now(dt.UTC)
    )
    print(f"applied {applied.commit[:12]}: {applied.changes.summary()}", flush=True)
    repairer = drift.Repairer(process.target, settings.apply, name)
    repairer.track(applied)
    del applied  # the repairer keeps what it needs, as the controller's worker does
    inbox: queue.Queue[watches.Event] = queue.Queue()
    follower = watches.Watches(
        process.target, drift.selector(settings.apply), inbox.put, lambda kind: None
    )
    follower.follow(repairer.kinds())
    while not stop.is_set():
        try:
            event = inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        repair = repairer.handle(event)
        if repair is not None:
            print(repair.message(), flush=True)
    follower.stop()
    process.close()
    return 0


def _dump_allocations(signum: int, frame: types.FrameType | None) -> None:
    """The largest live allocations by line, to stdout (the bench prints them)."""
    snapshot = tracemalloc.take_snapshot()
    top = snapshot.statistics("lineno")
    total = sum(stat.size for stat in top)
    print(f"tracemalloc: {total / 2**20:.1f} MiB live in Python objects", flush=True)
    for stat in top[:25]:
        print(f"  {stat.size / 2**20:7.2f} MiB {stat.count:8d} {stat.traceback[0]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
