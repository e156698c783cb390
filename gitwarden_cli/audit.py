"""`gitwarden audit`: who can get around admission, and is GitWarden's own configuration intact.

Composes the admission configuration (`webhook.config`), the expected ValidatingWebhookConfiguration
(`webhook.registration`) and the reconciler's guard (`reconciler.guard`): the webhook renders
the document, the guard receives it as plain data, so neither component imports the other.
Owns the arguments, the table and JSON output and the exit codes: 0 nothing beyond the expected
identities and no change to GitWarden's configuration, 1 findings, 2 usage, configuration or
cluster error (a message, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gitwarden_cli import main as cli
from gitwarden_cli import webhook as webhook_cli
from reconciler import kube_client
from reconciler.guard import audit, checks, kube, selfguard
from webhook import config as config_mod
from webhook import registration

_UNKNOWN_CLIENT = {"url": "https://gitwarden.invalid"}
"""Stands in for the clientConfig when none is given; it is then neither compared nor set."""


def register(subparsers: Any) -> None:
    """Add `gitwarden audit`."""
    parser = subparsers.add_parser(
        "audit",
        help="report who can get around admission; check (and restore) GitWarden's webhook",
        description=(
            "List RBAC and report every subject holding a permission that defeats GitWarden's "
            "admission (impersonating the GitOps identity, its tokens, pods or writes in "
            "GitWarden's namespace, writes to its webhook configuration, escalate/bind, `*`), "
            "each confirmed with a SubjectAccessReview; compare the live "
            "ValidatingWebhookConfiguration with the one the configuration renders and report "
            "changes in GitWarden's namespace not made by GitOps. Exit 0 when nothing beyond the "
            "expected identities is found, 1 on findings, 2 on errors."
        ),
    )
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster credentials")
    parser.add_argument("--config", type=Path, required=True, help="admission configuration")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="IDENTITY[=PERM,...]",
        help="an identity (username, or group:NAME) expected to hold the listed permissions "
        "(all when none are listed); repeatable",
    )
    parser.add_argument(
        "--no-confirm", action="store_true", help="skip the SubjectAccessReview per finding"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="the webhook's base URL, as registered")
    target.add_argument("--service", help="NAMESPACE/NAME[:PORT] of the webhook's Service")
    parser.add_argument("--ca-bundle", type=Path, help="PEM CA of the webhook's serving cert")
    parser.add_argument("--name", default=registration.NAME, help="webhook configuration name")
    parser.add_argument(
        "--manager",
        action="append",
        default=[],
        help="another field manager whose changes in GitWarden's namespace are expected "
        f"(besides {selfguard.FIELD_MANAGER}); repeatable",
    )
    parser.add_argument(
        "--restore",
        action="store_true",
        help="put the webhook configuration back (server-side apply as gitwarden, forced); "
        "needs --url or --service",
    )
    parser.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    config = webhook_cli.load_config(args.config)
    known = args.url is not None or args.service is not None
    if args.restore and not known:
        raise cli.UsageError("--restore needs --url or --service (the clientConfig to restore)")
    client = (
        webhook_cli.client_config(args.url, args.service, args.ca_bundle)
        if known
        else (dict(_UNKNOWN_CLIENT))
    )
    installation = checks.Installation(
        namespace=config.namespace,
        gitops_service_account=config.gitops_service_account,
        webhook_configuration=args.name,
        exempt_usernames=config.exempt_usernames,
        exempt_groups=config.exempt_groups,
        break_glass_groups=config.break_glass_groups,
    )
    permissions = checks.permissions(installation)
    expected = (*checks.default_expected(installation), *_expected(args.expect, permissions))
    target = selfguard.Target(
        webhook_configuration=registration.validating_webhook_configuration(
            config, client, name=args.name
        ),
        namespace=config.namespace,
        managers=(selfguard.FIELD_MANAGER, *args.manager),
        compare_client_config=known,
    )
    try:
        cluster = kube.KubeCluster(kube_client.api_client(args.kubeconfig))
        snapshot = cluster.rbac_snapshot()
        findings = audit.run(
            snapshot, permissions, expected, None if args.no_confirm else cluster.allowed
        )
        guard = (selfguard.restore if args.restore else selfguard.check)(cluster, target)
    except (kube_client.ConfigError, selfguard.GuardError) as exc:
        print(f"gitwarden audit: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    if args.json:
        sys.stdout.write(json.dumps(_document(config, findings, guard), indent=2) + "\n")
    else:
        sys.stdout.write(_tables(config, permissions, findings, guard))
    clean = audit.nothing_unexpected(findings) and guard.clean
    return cli.EXIT_OK if clean else cli.EXIT_FAILED


def _expected(values: Sequence[str], permissions: Sequence[checks.Permission]) -> list[Any]:
    ids = {p.id for p in permissions} | {checks.ANY}
    parsed = []
    for value in values:
        try:
            expectation = checks.parse_expected(value)
        except ValueError as exc:
            raise cli.UsageError(f"--expect: {exc}") from exc
        unknown = sorted(set(expectation.permissions) - ids)
        if unknown:
            raise cli.UsageError(
                f"--expect {value}: unknown permission {', '.join(unknown)} "
                f"(known: {', '.join(sorted(ids - {checks.ANY}))})"
            )
        parsed.append(expectation)
    return parsed


# ---------------------------------------------------------------------------------- output


def _document(
    config: config_mod.AdmissionConfig,
    findings: Sequence[audit.Finding],
    guard: selfguard.GuardReport,
) -> dict[str, Any]:
    return {
        "namespace": config.namespace,
        "gitops_identity": config.gitops_usernames[0],
        "rbac": [
            {
                "status": f.status,
                "subject": {
                    "kind": f.subject.kind,
                    "name": f.subject.name,
                    **({"namespace": f.subject.namespace} if f.subject.namespace else {}),
                },
                "permission": f.permission,
                "description": f.description,
                "requests": list(f.requests),
                "via": f.via,
                "confirmed": f.confirmed,
                **({"note": f.note} if f.note else {}),
            }
            for f in findings
        ],
        "webhook_configuration": {
            "name": guard.webhook_configuration,
            "missing": guard.missing,
            "client_config_checked": guard.client_config_checked,
            "restored": guard.restored,
            "drift": [
                {"path": d.path, "expected": d.expected, "live": d.live, "managers": d.managers}
                for d in guard.drift
            ],
        },
        "namespace_changes": [
            {
                "kind": c.kind,
                "name": c.name,
                "manager": c.manager,
                "operation": c.operation,
                "time": c.time,
                "fields": list(c.fields),
            }
            for c in guard.foreign
        ],
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *rows)
    ]
    return "\n".join(lines) + "\n"


def _sar(confirmed: bool | None) -> str:
    return {None: "-", True: "allowed", False: "denied"}[confirmed]


def _tables(
    config: config_mod.AdmissionConfig,
    permissions: Sequence[checks.Permission],
    findings: Sequence[audit.Finding],
    guard: selfguard.GuardReport,
) -> str:
    out = [
        f"Who can get around admission (namespace {config.namespace}, "
        f"GitOps identity {config.gitops_usernames[0]}):\n",
        _table(
            ("STATUS", "SUBJECT", "PERMISSION", "VIA", "SAR"),
            [(f.status, f.subject_text, f.permission, f.via, _sar(f.confirmed)) for f in findings],
        ),
        "\nPermissions:\n",
        *(f"  {p.id:<22} {p.description}\n" for p in permissions),
        f"\nValidatingWebhookConfiguration {guard.webhook_configuration}: ",
    ]
    if guard.missing:
        out.append("MISSING (deleted?)\n")
    elif guard.drift:
        out.append(f"{len(guard.drift)} difference(s) from the configuration\n")
    else:
        out.append("as configured\n")
    if not guard.client_config_checked:
        out.append("  (clientConfig not compared: give --url or --service and --ca-bundle)\n")
    for d in guard.drift:
        out.append(f"  {d.path}: changed by {', '.join(d.managers) or 'unknown'}\n")
        out.append(f"    expected: {json.dumps(d.expected, sort_keys=True)}\n")
        out.append(f"    live:     {json.dumps(d.live, sort_keys=True)}\n")
    if guard.restored:
        out.append(f"  restored with server-side apply (field manager {selfguard.FIELD_MANAGER})\n")
    out.append(f"\nChanges in namespace {config.namespace} not made by GitOps:")
    if not guard.foreign:
        out.append(" none\n")
    else:
        out.append("\n")
        out.append(
            _table(
                ("KIND", "NAME", "MANAGER", "OPERATION", "TIME", "FIELDS"),
                [
                    (c.kind, c.name, c.manager, c.operation, c.time, ",".join(c.fields))
                    for c in guard.foreign
                ],
            )
        )
    return "".join(out)
