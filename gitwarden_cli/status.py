"""`gitwarden status`: print the Sync status object (what was applied, by whom, how it went).

Owns the command's arguments and the text and JSON renderings of a stored status. Reading and
installing go through `reconciler.cluster` / `reconciler.syncstore`. Exit codes: 0 the Sync is
Ready, 1 it is not (or does not exist, or the cluster cannot be reached), 2 usage or
configuration errors (no usable kubeconfig).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

from gitwarden_cli import main
from reconciler import cluster, config, errors, kube_client, status, syncstore


def register(subparsers: Any) -> None:
    """Add the `status` subcommand."""
    parser = subparsers.add_parser(
        "status",
        help="show what GitWarden last applied and whether it is Ready",
        description="Print the Sync status object: conditions, the last applied commit and its"
        " signer, the last ChangeSet, warnings and the size of the inventory.",
    )
    parser.add_argument(
        "--kubeconfig",
        type=pathlib.Path,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)",
    )
    parser.add_argument("--name", default="gitwarden", help="the Sync object (identity.name)")
    parser.add_argument("--json", action="store_true", help="the status as JSON")
    parser.add_argument(
        "--install-crd",
        action="store_true",
        help="install the Sync CRD (syncs.gitwarden.dev) if the cluster lacks it, then print",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read (and with --install-crd, install) the Sync object and print it."""
    kubeconfig = args.kubeconfig or _default_kubeconfig()
    try:
        adapter = cluster.Cluster(kube_client.configuration(kubeconfig), config.ApplyConfig())
    except kube_client.ConfigError as exc:
        raise main.UsageError(str(exc)) from exc
    try:
        if args.install_crd and syncstore.ensure_crd(adapter):
            print(f"installed CustomResourceDefinition {syncstore.CRD_NAME}", file=sys.stderr)
        found = syncstore.read(adapter, args.name)
    except errors.ReconcileError as exc:
        print(f"gitwarden status: {exc}", file=sys.stderr)
        return main.EXIT_FAILED
    finally:
        adapter.close()
    if found is None:
        print(
            f"gitwarden status: no Sync object {args.name!r} (GitWarden has not reported yet)",
            file=sys.stderr,
        )
        return main.EXIT_FAILED
    stored = found.get("status")
    state: Mapping[str, Any] = stored if isinstance(stored, Mapping) else {}
    print(
        json.dumps(as_json(args.name, state), indent=2) if args.json else as_text(args.name, state)
    )
    return main.EXIT_OK if _ready(state).get("status") == "True" else main.EXIT_FAILED


def as_json(name: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """The status with the inventory decoded into readable rows."""
    shown = {k: v for k, v in state.items() if k != "inventory"}
    try:
        inventory = status.decode_inventory(state)
    except ValueError as exc:
        shown["inventory"] = {"error": str(exc)}
    else:
        shown["inventory"] = [
            {
                "ref": str(ref),
                "digest": e.digest,
                "resourceVersion": e.resource_version,
                "source": e.source,
            }
            for ref, e in sorted(inventory.entries.items())
        ]
    return {"name": name, "status": shown}


def as_text(name: str, state: Mapping[str, Any]) -> str:
    """A few aligned lines for people."""
    ready = _ready(state)
    lines = [f"Sync {name}: Ready={ready.get('status', 'Unknown')} ({ready.get('reason', '-')})"]
    signer = state.get("signer")
    revision = state.get("lastAppliedCommit") or "none"
    rows = [
        ("revision", revision + (f" (signed by {signer})" if signer else "")),
        ("applied", state.get("lastAppliedTime") or "never"),
        ("attempted", state.get("lastAttemptedCommit") or "-"),
        ("changes", (state.get("changeSet") or {}).get("summary", "-")),
        ("inventory", f"{(state.get('inventory') or {}).get('count', 0)} objects"),
    ]
    if ready.get("message"):
        rows.append(("message", str(ready["message"])))
    lines += [f"  {label:<10} {value}" for label, value in rows]
    warnings = state.get("warnings") or []
    if warnings:
        lines.append("  warnings:")
        lines += [f"    - {w}" for w in warnings]
    return "\n".join(lines)


def _ready(state: Mapping[str, Any]) -> Mapping[str, Any]:
    for condition in state.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition
    return {}


def _default_kubeconfig() -> pathlib.Path | None:
    # Read here, at the entry point: nothing below the command line looks at the environment.
    named = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if named:
        return pathlib.Path(named)
    home = pathlib.Path.home() / ".kube" / "config"
    return home if home.exists() else None
