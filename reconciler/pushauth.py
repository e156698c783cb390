"""Authenticating a push notification: GitHub's and the generic HMAC, GitLab's token.

Owns reading the receiver's secrets from their files (`load_secrets`) and the decision on one
request (`verify`), a pure function of its headers, body and the secrets. Only a configured
scheme can pass a request; every comparison is `hmac.compare_digest`, and a malformed signature
is refused on its shape before any comparison. A request that presents a configured scheme's
header and fails it is refused even if another scheme's header would pass, so one good
credential cannot carry a forged one along. `Verdict.reason` is for the log: it names schemes
and headers, never a secret, a signature or the body. Must not open sockets or log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reconciler import config, controlconfig

GITHUB, GITLAB, HMAC = "github", "gitlab", "hmac"
GITHUB_HEADER = "X-Hub-Signature-256"
GITLAB_HEADER = "X-Gitlab-Token"
PREFIX = "sha256="
_HEX_LENGTH = hashlib.sha256().digest_size * 2


class Headers(Protocol):
    """A request's headers: a `Mapping[str, str]`, or `http.client`'s message, which repeats
    a name once per copy in `items()`."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class SecretFileError(config.ConfigError):
    """A push secret file is missing, unreadable or empty; names the file, never its content."""


@dataclass(frozen=True)
class Secrets:
    """The configured secrets (None: that scheme is off) and the generic scheme's header."""

    github: bytes | None = field(default=None, repr=False)
    gitlab: bytes | None = field(default=None, repr=False)
    hmac: bytes | None = field(default=None, repr=False)
    hmac_header: str = controlconfig.DEFAULT_HMAC_HEADER

    def schemes(self) -> tuple[str, ...]:
        """The configured schemes, in the order they are checked."""
        named = ((GITHUB, self.github), (GITLAB, self.gitlab), (HMAC, self.hmac))
        return tuple(name for name, secret in named if secret is not None)


@dataclass(frozen=True)
class Verdict:
    """Whether a request passed; `scheme` that passed it, or `reason` why none did."""

    ok: bool
    scheme: str | None = None
    reason: str = ""


def load_secrets(push: controlconfig.PushConfig) -> Secrets:
    """The secrets `push` names, read once at start (one trailing newline stripped)."""
    return Secrets(
        github=_read(push.github_secret_file, "push.github_secret_file"),
        gitlab=_read(push.gitlab_token_file, "push.gitlab_token_file"),
        hmac=_read(push.hmac_secret_file, "push.hmac_secret_file"),
        hmac_header=push.hmac_header,
    )


def _read(path: Path | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        # strerror only: the exception's own text is fine, but keep one shape for all causes.
        raise SecretFileError(f"{key}: cannot read {path}: {exc.strerror or 'error'}") from None
    # `echo secret > file` and Kubernetes Secret volumes differ by a newline; the Git host
    # never sends it. Only one is removed: anything else is part of the secret.
    secret = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not secret:
        raise SecretFileError(f"{key}: {path} is empty")
    return secret


def verify(headers: Headers, body: bytes, secrets: Secrets) -> Verdict:
    """Whether the request is authentic under one of the configured schemes."""
    sent = _by_name(headers)
    header_of = {GITHUB: GITHUB_HEADER, GITLAB: GITLAB_HEADER, HMAC: secrets.hmac_header}
    configured = secrets.schemes()
    presented = [s for s in configured if header_of[s].lower() in sent]
    if not presented:
        if not configured:
            return Verdict(False, reason="no push scheme is configured")
        others = [header_of[s] for s in (GITHUB, GITLAB, HMAC) if header_of[s].lower() in sent]
        if others:
            return Verdict(False, reason=f"{', '.join(others)} sent, but that scheme is not set up")
        wanted = ", ".join(header_of[s] for s in configured)
        return Verdict(False, reason=f"no signature header (expected {wanted})")
    passed = None
    for scheme in presented:
        name = header_of[scheme]
        values = sent[name.lower()]
        if len(values) != 1:
            # Which copy would a proxy, or the Git host, have meant? Refuse rather than guess.
            return Verdict(False, reason=f"{name} sent {len(values)} times")
        secret = _secret(secrets, scheme)
        problem = (
            _token_problem(values[0], secret)
            if scheme == GITLAB
            else _signature_problem(values[0], body, secret)
        )
        if problem:
            return Verdict(False, reason=f"{name}: {problem}")
        passed = passed or scheme
    return Verdict(True, scheme=passed)


def _by_name(headers: Headers) -> dict[str, list[str]]:
    # Header names are case-insensitive; `.items()` (unlike `[]`) shows every copy of one.
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), []).append(value)
    return found


def _secret(secrets: Secrets, scheme: str) -> bytes:
    secret = {GITHUB: secrets.github, GITLAB: secrets.gitlab, HMAC: secrets.hmac}[scheme]
    assert secret is not None  # noqa: S101  # only configured schemes are checked
    return secret


def _wire_bytes(value: str) -> bytes:
    # http.server decodes header values as Latin-1; encoding back gives the bytes sent.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _token_problem(value: str, token: bytes) -> str:
    # Digests of both sides have one length, so the comparison's time does not even tell
    # how long the token is.
    sent = hashlib.sha256(_wire_bytes(value.strip())).digest()
    if not hmac.compare_digest(sent, hashlib.sha256(token).digest()):
        return "token does not match"
    return ""


def _signature_problem(value: str, body: bytes, secret: bytes) -> str:
    value = value.strip()
    if not value.startswith(PREFIX):
        return f"not a {PREFIX}<hex> signature"
    given_hex = value[len(PREFIX) :]
    if len(given_hex) != _HEX_LENGTH:
        return f"signature is not {_HEX_LENGTH} hex digits"
    try:
        given = bytes.fromhex(given_hex)
    except ValueError:
        return "signature is not hex"
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        return "signature does not match the body"
    return ""
