"""`gitwarden reconcile --config FILE [--once [--dry-run]]`: the reconciler, or one pass of it.

Without `--once` it runs the controller (`reconciler.controller`): passes on the interval and
on pushes, drift repair, leader election, the endpoints, until SIGTERM/SIGINT. Exit codes of
the loop: 0 stopped by a signal (the current stage finished or was abandoned between objects,
the Lease released), 1 it could not start (cluster unreachable at start, a port taken) or it
lost the Lease while leading (it exits at once; the Deployment restarts it as a standby),
2 usage or configuration. Its output is the log (`log.format`, on stderr).

With `--once`: the command's arguments, printing the ChangeSet (one line per changed object,
then the summary) or, for a dry run, a unified diff per object (Secret values masked as
`***`), writing the outcome to the Sync status (never for a dry run), and exit codes: 0
applied, 1 refused or failed (the reason names the commit or file), 2 usage or configuration.

It never prints a traceback: a `ReconcileError` is reported by its message, anything else by
its type only (its text could quote object contents). It must not implement a stage: it
composes `reconciler.config`, `reconciler.wiring` and `reconciler.pipeline` (one pass), or
`reconciler.controlwiring` and `reconciler.controller` (the loop).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import pathlib
import sys
import textwrap
from typing import Any

from gitwarden_cli import main
from reconciler import (
    changeset,
    config,
    configdoc,
    errors,
    kube_client,
    pipeline,
    status,
    trustfiles,
    wiring,
)

EXIT_CODES = """exit codes:
  without --once: 0 stopped by SIGTERM/SIGINT, 1 could not start or lost the Lease while
  leading, 2 usage or configuration error
  with --once: 0 applied (or dry run), 1 refused or failed, 2 usage or configuration error
"""


def register(subparsers: Any) -> None:
    """Add the `reconcile` subcommand."""
    parser = subparsers.add_parser(
        "reconcile",
        help="run the reconciler (one pass with --once)",
        description=textwrap.fill(
            "Fetch the configured branch, verify every commit since the trust anchor, load,"
            " decrypt, plan and apply it with server-side apply, prune what left Git and"
            " record the outcome in the Sync status. Without --once it runs until stopped:"
            " a pass every loop.interval and at once on a verified push, drift repaired from"
            " watches, only the Lease holder applying, /healthz /readyz /metrics served.",
            78,
        ),
        epilog=EXIT_CODES + "\n" + configdoc.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=pathlib.Path, required=True, help="the YAML settings")
    parser.add_argument(
        "--once", action="store_true", help="run one pass and exit (default: run until stopped)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would change (a diff per object, Secret values as ***), change nothing",
    )
    parser.add_argument(
        "--kubeconfig",
        type=pathlib.Path,
        help="overrides identity.kubeconfig (default: in-cluster)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The loop, or one pass; see the module docstring for the output and the exit codes."""
    if not args.once:
        if args.dry_run:
            raise main.UsageError("--dry-run needs --once")
        # Imported here, not at the top: the loop brings prometheus_client, and `gitwarden
        # webhook serve` (whose parser is built in the same process) must set its
        # multiprocess directory before prometheus_client is first imported.
        loopmode = importlib.import_module("gitwarden_cli.loopmode")
        code: int = loopmode.run(args.config, args.kubeconfig)
        return code
    try:
        settings = config.load(args.config)
        process = wiring.build(settings, args.kubeconfig)
    except (
        config.ConfigError,
        trustfiles.TrustFileError,
        kube_client.ConfigError,
    ) as exc:
        raise main.UsageError(str(exc)) from None
    except errors.ReconcileError as exc:
        print(f"gitwarden reconcile: cannot start: {exc}", file=sys.stderr)
        return main.EXIT_FAILED
    except Exception as exc:  # the command's promise: never a traceback
        print(f"gitwarden reconcile: internal error ({type(exc).__name__})", file=sys.stderr)
        return main.EXIT_FAILED
    try:
        return _pass(settings, process, dry_run=args.dry_run)
    finally:
        process.close()


def _pass(settings: config.ReconcilerConfig, process: wiring.Process, *, dry_run: bool) -> int:
    now = datetime.datetime.now(datetime.UTC)
    planned: pipeline.Planned | None = None
    try:
        planned = pipeline.prepare(process.ports, settings, None, now)
        applied = pipeline.execute(planned, process.ports, dry_run=dry_run)
        if dry_run:
            _print_diffs(process, applied)
    except errors.ReconcileError as exc:
        _report_failure(exc)
        if not dry_run:
            # With the plan, status keeps on record what apply did before it stopped.
            refused = exc.tip if isinstance(exc, pipeline.RevisionRefused) else None
            failed = status.failed(
                exc, planned.plan if planned is not None else None, attempted=refused
            )
            _write_status(process, settings, failed, now)
        return main.EXIT_FAILED
    except Exception as exc:  # the command's promise: never a traceback
        # The text of an unexpected error could quote an object (a Secret); only its type.
        print(f"gitwarden reconcile: internal error ({type(exc).__name__})", file=sys.stderr)
        return main.EXIT_FAILED
    _print_changes(applied)
    if dry_run:
        print("dry run: nothing was changed")
        return main.EXIT_OK
    outcome = status.succeeded(applied.plan, applied.changes, applied.warnings)
    return main.EXIT_OK if _write_status(process, settings, outcome, now) else main.EXIT_FAILED


def _print_changes(applied: pipeline.Applied) -> None:
    for warning in applied.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for change in applied.changes.changes:
        if change.action is not changeset.Action.UNCHANGED:
            print(change)
    print(f"{applied.commit[:12]}: {applied.changes.summary()}")


def _print_diffs(process: wiring.Process, applied: pipeline.Applied) -> None:
    for found in process.diff(applied.plan):
        if found.diff:
            print(found.diff, end="" if found.diff.endswith("\n") else "\n")


def _report_failure(exc: errors.ReconcileError) -> None:
    kind = "retry later" if isinstance(exc, errors.Transient) else "stalled"
    print(f"gitwarden reconcile: refused ({kind}): {exc}", file=sys.stderr)
    partial = getattr(exc, "changes", None)
    if isinstance(partial, changeset.ChangeSet) and partial.changes:
        print(f"before it stopped: {partial.summary()}", file=sys.stderr)


def _write_status(
    process: wiring.Process,
    settings: config.ReconcilerConfig,
    outcome: status.Outcome,
    now: datetime.datetime,
) -> bool:
    try:
        process.target.write_status(settings.identity.name, outcome, now)
    except errors.ReconcileError as exc:
        print(f"gitwarden reconcile: could not write the Sync status: {exc}", file=sys.stderr)
        return False
    return True
