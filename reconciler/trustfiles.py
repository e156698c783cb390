"""The trust and the commit policy of the reconciler, read from the files its configuration names.

Owns turning `trust.allowed_signers`, `trust.openpgp_keys` and the commit-policy settings into
`verify.Trust` and a `CommitPolicy` (OPA, `opa eval`), with errors naming the file. Read once at
the entry point: a trust file that does not parse stops the reconciler before any pass (a typo
must never quietly drop a key or a rule). Must not verify anything.
"""

from __future__ import annotations

import json
import pathlib

from reconciler import commitpolicy, config, errors, verify
from reconciler.signatures import allowed_signers, openpgp


class TrustFileError(errors.Stalled):
    """A trust or commit-policy file is missing or invalid; the message names it."""


def load(trust: config.TrustConfig) -> verify.Trust:
    """The trusted SSH signers and OpenPGP certificates."""
    return verify.Trust(_allowed_signers(trust.allowed_signers), _keyring(trust.openpgp_keys))


def commit_policy(trust: config.TrustConfig) -> commitpolicy.CommitPolicy | None:
    """The configured commit policy, or None when none is configured."""
    if trust.commit_policy_dir is None or trust.commit_policy_data is None:
        return None
    if not trust.commit_policy_dir.is_dir():
        raise TrustFileError(
            f"{trust.commit_policy_dir}: trust.commit_policy_dir is not a directory"
        )
    data = trust.commit_policy_data
    try:
        document = json.loads(data.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TrustFileError(
            f"{data}: trust.commit_policy_data is not a readable JSON file"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("commits"), dict):
        raise TrustFileError(f"{data}: needs a top-level `commits` object")
    return commitpolicy.OpaEval(str(trust.opa or "opa"), trust.commit_policy_dir, data)


def _allowed_signers(path: pathlib.Path | None) -> allowed_signers.AllowedSigners:
    if path is None:
        return allowed_signers.AllowedSigners(entries=())
    try:
        return allowed_signers.parse(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise TrustFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TrustFileError(f"{path}: not UTF-8 text") from None
    except allowed_signers.AllowedSignersError as exc:
        raise TrustFileError(str(exc)) from None


def _keyring(directory: pathlib.Path | None) -> openpgp.Keyring:
    if directory is None:
        return openpgp.load_keyring(())
    try:
        files = sorted(directory.glob("*.asc"))
        loaded = tuple((str(f), f.read_bytes()) for f in files)
    except OSError as exc:
        raise TrustFileError(f"{directory}: cannot read: {exc.strerror}") from None
    if not files:
        raise TrustFileError(f"{directory}: no *.asc public key files")
    try:
        return openpgp.load_keyring(loaded)
    except openpgp.KeyringError as exc:
        raise TrustFileError(str(exc)) from None
