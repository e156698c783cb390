"""Entry point of the `gitwarden` command: argument parsing and exit codes only.

Exit codes shared by every subcommand: 0 success, 1 the checked thing failed (a commit did not
verify, a secret did not open), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Subcommand modules, each with `register(subparsers) -> None` that sets `func` on its parser.
_SUBCOMMANDS: tuple[str, ...] = ("webhook", "sealing", "verify", "reconcile", "status")


class UsageError(Exception):
    """Bad arguments or configuration: reported on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gitwarden",
        description="Make Git the only way to change a Kubernetes cluster.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"gitwarden_cli.{name}")
        module.register(subparsers)
    return parser


def _version() -> str:
    try:
        return f"gitwarden {metadata.version('gitwarden')}"
    except metadata.PackageNotFoundError:
        return "gitwarden (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand, and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except UsageError as exc:
        print(f"gitwarden {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
