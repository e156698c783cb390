"""`gitwarden reconcile --config FILE` without `--once`: the long-running reconciler.

Owns the process-level duties of the loop: the log format (before anything is logged), the
signal handlers (SIGTERM and SIGINT stop the controller; SIGUSR1 logs the largest live
allocations when tracemalloc runs), the exit code, and the exit itself.
When the Lease is lost while leading the process leaves with `os._exit` at once: a worker in
the middle of an apply must not run on (nor hold the exit up) past its lease. It never prints
a traceback. Must not implement the loop (`reconciler.controller`).
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import sys
import tracemalloc
from types import FrameType

from gitwarden_cli import main
from reconciler import config, controller, controlwiring, errors, kube_client, logs, trustfiles

log = logs.get("main")


def run(config_path: pathlib.Path, kubeconfig: pathlib.Path | None) -> int:
    """Run until a signal; see `gitwarden_cli.reconcile` for the exit codes."""
    try:
        settings = config.load(config_path)
    except config.ConfigError as exc:
        raise main.UsageError(str(exc)) from None
    logs.configure(settings.log)
    try:
        built = controlwiring.build(settings, config_path, kubeconfig)
    except (trustfiles.TrustFileError, kube_client.ConfigError, config.ConfigError) as exc:
        raise main.UsageError(str(exc)) from None
    except errors.ReconcileError as exc:
        log.error(f"cannot start: {exc}")  # noqa: TRY400  # ours: the message says it all
        return main.EXIT_FAILED
    except Exception as exc:  # the command's promise: never a traceback
        log.error("cannot start: internal error", extra={"error": type(exc).__name__})  # noqa: TRY400
        return main.EXIT_FAILED

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info(f"{signal.Signals(signum).name}: stopping")
        built.controller.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC, as `bench.bench_memory --profile` sets
        signal.signal(signal.SIGUSR1, _dump_allocations)
    try:
        code = built.controller.run()
    except OSError as exc:  # an endpoint's port cannot be bound
        log.error(f"cannot listen: {exc.strerror}")  # noqa: TRY400
        code = main.EXIT_FAILED
    except errors.ReconcileError as exc:
        log.error(f"cannot start: {exc}")  # noqa: TRY400
        code = main.EXIT_FAILED
    except Exception as exc:  # the command's promise: never a traceback
        log.error("stopped: internal error", extra={"error": type(exc).__name__})  # noqa: TRY400
        code = main.EXIT_FAILED
    if code == controller.EXIT_LOST or built.controller.busy:
        # At once (or after a stop the request in flight did not honour in time): no atexit
        # hook, no join of a worker still applying (ThreadPoolExecutor's atexit would wait
        # for it), no cleanup that could outlast the lease.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    built.process.close()
    return code


def _dump_allocations(_signum: int, _frame: FrameType | None) -> None:
    """The largest live allocations by source line (code locations only, never contents)."""
    top = tracemalloc.take_snapshot().statistics("lineno")
    log.info(f"tracemalloc: {sum(s.size for s in top) / 2**20:.1f} MiB live in Python objects")
    for stat in top[:25]:
        log.info(f"  {stat.size / 2**20:7.2f} MiB {stat.count:8d} {stat.traceback[0]}")
