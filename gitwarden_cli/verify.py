"""`gitwarden verify`: check a repository's commit or tag signatures the way the reconciler does.

Owns the command's arguments, building the trust and policy settings from files named on the
command line, and printing verdicts (text or JSON lines). It must not implement verification:
it composes `reconciler.gitsource`, `reconciler.verify` and `reconciler.commitpolicy`.
Exit codes: 0 everything verified, 1 an object failed (each printed with its reason), 2 usage
or configuration errors (including an unreachable source, an ambiguous revision, objects missing
from the repository, an unusable trusted key or a policy that cannot be evaluated).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import pathlib
import sys
import tempfile
from typing import Any

from gitwarden_cli import main
from reconciler import commitpolicy, gitsource
from reconciler import verify as stage
from reconciler.signatures import allowed_signers, openpgp


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the command needs, built once from the arguments."""

    repo: str
    rev: str
    since: str | None
    mode: stage.Mode
    trust: stage.Trust
    policy: commitpolicy.CommitPolicy | None
    as_json: bool
    known_hosts: pathlib.Path | None
    identity_file: pathlib.Path | None
    ca_bundle: pathlib.Path | None
    cache_dir: pathlib.Path | None


def register(subparsers: Any) -> None:
    """Add the `verify` subcommand."""
    parser = subparsers.add_parser(
        "verify",
        help="verify commit or tag signatures (and the commit policy) for a revision",
        description="Verify that every commit in (SINCE, REV] (mode all), the commit REV (head)"
        " or the tag REV (tag) is signed by a trusted SSH or OpenPGP key.",
    )
    parser.add_argument("--repo", required=True, help="local path or https/ssh URL")
    parser.add_argument(
        "--rev",
        required=True,
        help="branch or tag name (refused when it is both), refs/... name, HEAD, or full commit id",
    )
    parser.add_argument("--since", help="last applied (already trusted) commit, named the same way")
    parser.add_argument("--mode", choices=[m.value for m in stage.Mode], default="all")
    parser.add_argument("--allowed-signers", type=pathlib.Path, help="git allowed_signers file")
    parser.add_argument("--gpg-keys", type=pathlib.Path, help="directory of armored *.asc keys")
    parser.add_argument("--policy-dir", type=pathlib.Path, help="Rego of policies/commits")
    parser.add_argument("--policy-data", type=pathlib.Path, help="JSON with a `commits` key")
    parser.add_argument("--opa", default="opa", help="opa binary (default: from PATH)")
    parser.add_argument("--known-hosts", type=pathlib.Path, help="known_hosts for ssh URLs")
    parser.add_argument("--identity-file", type=pathlib.Path, help="ssh private key for fetch")
    parser.add_argument(
        "--ca-bundle", type=pathlib.Path, help="PEM CAs for https URLs (default: system CAs)"
    )
    parser.add_argument("--cache-dir", type=pathlib.Path, help="keep fetched repositories here")
    parser.add_argument("--json", action="store_true", help="one JSON record per object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build settings from `args`, verify, print the verdicts and return the exit code."""
    settings = _settings(args)
    now = datetime.datetime.now(datetime.UTC)
    try:
        with contextlib.ExitStack() as stack:
            cache = settings.cache_dir or pathlib.Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="gitwarden-verify-"))
            )
            report = _inspect(settings, cache, now)
    except (gitsource.SourceError, gitsource.FetchError, commitpolicy.PolicyUnavailable) as exc:
        raise main.UsageError(str(exc)) from exc
    _print(report, settings.as_json)
    return main.EXIT_OK if report.ok else main.EXIT_FAILED


def _inspect(settings: Settings, cache_dir: pathlib.Path, now: datetime.datetime) -> stage.Report:
    path = pathlib.Path(settings.repo)
    if path.is_dir():
        checkout = gitsource.open_local(path, settings.rev, settings.since)
    else:
        source = gitsource.Source(
            settings.repo, settings.known_hosts, settings.identity_file, settings.ca_bundle
        )
        full = settings.mode is stage.Mode.ALL and settings.since is None
        checkout = gitsource.fetch(source, cache_dir, settings.rev, settings.since, full=full)
    return stage.inspect(checkout, settings.trust, settings.mode, settings.policy, now)


def _settings(args: argparse.Namespace) -> Settings:
    if args.allowed_signers is None and args.gpg_keys is None:
        raise main.UsageError("give --allowed-signers and/or --gpg-keys: nothing is trusted")
    if args.since is not None and not pathlib.Path(args.repo).is_dir() and not _is_sha(args.since):
        # A fetched source has no local names yet: the last applied commit must be its id.
        raise main.UsageError("--since must be a full commit id when --repo is a URL")
    if (args.policy_dir is None) != (args.policy_data is None):
        raise main.UsageError("--policy-dir and --policy-data go together")
    policy = None
    if args.policy_dir is not None:
        _check_policy_data(args.policy_data)
        policy = commitpolicy.OpaEval(args.opa, args.policy_dir, args.policy_data)
    return Settings(
        repo=args.repo,
        rev=args.rev,
        since=args.since,
        mode=stage.Mode(args.mode),
        trust=stage.Trust(_allowed_signers(args.allowed_signers), _keyring(args.gpg_keys)),
        policy=policy,
        as_json=args.json,
        known_hosts=args.known_hosts,
        identity_file=args.identity_file,
        ca_bundle=args.ca_bundle,
        cache_dir=args.cache_dir,
    )


def _is_sha(text: str) -> bool:
    return len(text) in {40, 64} and all(c in "0123456789abcdef" for c in text)


def _allowed_signers(path: pathlib.Path | None) -> allowed_signers.AllowedSigners:
    if path is None:
        return allowed_signers.AllowedSigners(entries=())
    try:
        return allowed_signers.parse(path.read_text(), str(path))
    except OSError as exc:
        raise main.UsageError(f"{path}: cannot read: {exc.strerror}") from exc
    except (allowed_signers.AllowedSignersError, UnicodeDecodeError) as exc:
        raise main.UsageError(str(exc)) from exc


def _keyring(directory: pathlib.Path | None) -> openpgp.Keyring:
    if directory is None:
        return openpgp.load_keyring(())
    files = sorted(directory.glob("*.asc"))
    if not files:
        raise main.UsageError(f"{directory}: no *.asc public key files")
    try:
        return openpgp.load_keyring(tuple((str(f), f.read_bytes()) for f in files))
    except openpgp.KeyringError as exc:
        raise main.UsageError(str(exc)) from exc


def _check_policy_data(path: pathlib.Path) -> None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise main.UsageError(f"{path}: not a readable JSON file") from exc
    if not isinstance(document, dict) or not isinstance(document.get("commits"), dict):
        raise main.UsageError(f"{path}: needs a top-level `commits` object")


def _record(verdict: stage.Verdict) -> dict[str, object]:
    signer = None
    if verdict.signer is not None:
        signer = {
            "kind": verdict.signer.kind,
            "principals": list(verdict.signer.principals),
            "fingerprint": verdict.signer.fingerprint,
        }
    return {
        "sha": verdict.sha,
        "kind": verdict.kind,
        "verdict": "good" if verdict.ok else "bad",
        "signer": signer,
        "reason": verdict.reason or None,
        "detail": verdict.detail or None,
    }


def _print(report: stage.Report, as_json: bool) -> None:
    if as_json:
        if report.refusal is not None:
            refusal = {"sha": report.tip, "kind": "range", "verdict": "refused"}
            print(json.dumps({**refusal, "reason": "force-push", "detail": report.refusal}))
        for verdict in report.verdicts:
            print(json.dumps(_record(verdict)))
        return
    if report.refusal is not None:
        print(f"REFUSED {report.tip}: {report.refusal}")
    for verdict in report.verdicts:
        if not verdict.ok:
            print(f"FAIL {verdict.sha} ({verdict.kind}): {verdict.reason}: {verdict.detail}")
    if report.ok:
        count = len(report.verdicts)
        print(f"OK: {count} {'object' if count == 1 else 'objects'} verified ({report.mode.value})")
    else:
        failed = sum(not v.ok for v in report.verdicts)
        print(f"{failed} of {len(report.verdicts)} objects failed verification", file=sys.stderr)
