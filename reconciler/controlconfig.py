"""The settings of the long-running reconciler: loop, self-guard, leader election, endpoints, push,
keys, logs.

Owns the frozen sections that only `gitwarden reconcile` without `--once` reads (the one-pass
command ignores them), each field documented once in its `metadata["help"]`, like the sections
in `reconciler.config` (which loads them from the same YAML file and generates `--help` and the
README table from them), and `check`, the rules across their fields. Must not read files or the
environment: the secrets of the push receiver are paths, read by the entry point.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import errors

DEFAULT_LEASE = "gitwarden-reconciler"
DEFAULT_HMAC_HEADER = "X-GitWarden-Signature-256"
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")

_HEADER = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]*")
_LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})")
_LEASE = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class LoopConfig:
    """When passes run and what the loop does after a failure."""

    interval: float = field(
        default=60.0,
        metadata=_help(
            "Seconds between passes. A pass also starts at once on a verified push, and drift"
            " is repaired from watches between passes; this pass is the safety net."
        ),
    )
    jitter: float = field(
        default=0.1,
        metadata=_help(
            "Up to this fraction of the interval is added at random to each wait (0-1), so"
            " replicas and clusters fed by one repository do not fetch in step."
        ),
    )
    retry_base: float = field(
        default=2.0,
        metadata=_help(
            "Seconds to wait after the first transient failure (API server or Git remote"
            " away, a conflict); doubled after each further one, up to retry_max."
        ),
    )
    retry_max: float = field(
        default=300.0, metadata=_help("Longest wait between retries after transient failures.")
    )
    stall_retry_max_intervals: float = field(
        default=10.0,
        metadata=_help(
            "A pass stalled by the cluster (Forbidden by RBAC, a kind or namespace missing, a"
            " webhook's denial) is retried after interval, doubling, up to this many intervals"
            " (at least 1); a stall caused in Git waits for a new commit or configuration."
        ),
    )
    drift_repair: bool = field(
        default=True,
        metadata=_help(
            "Watch every managed kind by the managed label and re-apply a managed object at"
            " once when it is changed or deleted outside Git."
        ),
    )


@dataclass(frozen=True)
class GuardConfig:
    """The self-guard of GitWarden's own ValidatingWebhookConfiguration (the leader runs it)."""

    webhook_configuration_file: Path | None = field(
        default=None,
        metadata=_help(
            "The expected ValidatingWebhookConfiguration (YAML or JSON, as `gitwarden webhook"
            " configuration` prints it; the chart renders it with the registration). Set: the"
            " live one is compared on every pass and on every change of it (a watch by name),"
            " put back when it differs, and reported (log, Event, metric, Sync condition"
            " WebhookConfiguration). Unset: no self-guard."
        ),
    )
    watch: bool = field(
        default=True,
        metadata=_help(
            "Watch the webhook configuration by name, so a change is undone within seconds"
            " rather than at the next pass (needs `watch` on it)."
        ),
    )


@dataclass(frozen=True)
class LeaderConfig:
    """Leader election through a coordination.k8s.io Lease in identity.namespace."""

    enabled: bool = field(
        default=True,
        metadata=_help(
            "Elect a leader: only the Lease holder applies, repairs drift and makes sealing"
            " keys. Turn off only when exactly one replica can ever run."
        ),
    )
    lease_name: str = field(default=DEFAULT_LEASE, metadata=_help("Name of the Lease object."))
    lease_duration: float = field(
        default=15.0,
        metadata=_help(
            "Seconds a standby waits after the holder's last renewal before it takes over."
        ),
    )
    renew_deadline: float = field(
        default=10.0,
        metadata=_help(
            "Seconds the leader keeps trying to renew before it gives up leading (and exits,"
            " so nothing it started can outlive its lease); less than lease_duration."
        ),
    )
    retry_period: float = field(
        default=2.0,
        metadata=_help("Seconds between attempts to acquire or renew the Lease."),
    )


@dataclass(frozen=True)
class ServerConfig:
    """The reconciler's own HTTP endpoints (plain HTTP, for the kubelet and Prometheus)."""

    listen: str = field(
        default="0.0.0.0:8081",
        metadata=_help(
            "HOST:PORT for /healthz, /readyz (the leader, or a standby that can reach the API"
            " server) and /metrics (Prometheus text format)."
        ),
    )


@dataclass(frozen=True)
class PushConfig:
    """The push receiver: a verified webhook from the Git host starts a pass at once."""

    listen: str | None = field(
        default=None,
        metadata=_help(
            "HOST:PORT of the push receiver (POST /hook); unset: no receiver, new commits are"
            " picked up on the interval."
        ),
    )
    github_secret_file: Path | None = field(
        default=None,
        metadata=_help(
            "File holding the GitHub webhook secret; requests must carry a matching"
            " X-Hub-Signature-256 (HMAC-SHA256 of the body)."
        ),
    )
    gitlab_token_file: Path | None = field(
        default=None,
        metadata=_help("File holding the GitLab webhook secret token (X-Gitlab-Token)."),
    )
    hmac_secret_file: Path | None = field(
        default=None,
        metadata=_help(
            "File holding the secret of the generic receiver: the header hmac_header carries"
            " `sha256=` and the hex HMAC-SHA256 of the body."
        ),
    )
    hmac_header: str = field(
        default=DEFAULT_HMAC_HEADER,
        metadata=_help("Header of the generic receiver's signature."),
    )
    max_body_bytes: int = field(
        default=1048576,
        metadata=_help("Largest request body read; a larger one gets 413 and triggers nothing."),
    )


@dataclass(frozen=True)
class KeysConfig:
    """The sealing-key service run beside the loop."""

    serve: bool = field(
        default=True,
        metadata=_help(
            "Run the sealing-key service: the leader makes a key when none exists or the newest"
            " is renew_days old; every replica serves the newest certificate at /v1/cert.pem."
        ),
    )
    listen: str = field(
        default="0.0.0.0:8080", metadata=_help("HOST:PORT of the certificate endpoint.")
    )
    renew_days: float = field(
        default=30.0,
        metadata=_help("Make a new sealing key this often (old keys stay); 0: never."),
    )
    check_every: float = field(
        default=3600.0, metadata=_help("Seconds between looks at the sealing keys.")
    )


@dataclass(frozen=True)
class LogConfig:
    """What the reconciler writes to standard error."""

    format: str = field(
        default="json",
        metadata=_help(
            "`json` (one object a line: time, level, logger, message, revision and object"
            " references; never a value) or `text`."
        ),
    )
    level: str = field(default="info", metadata=_help("debug, info, warning or error."))


SECTIONS: tuple[tuple[str, type[object]], ...] = (
    ("loop", LoopConfig),
    ("guard", GuardConfig),
    ("leader", LeaderConfig),
    ("server", ServerConfig),
    ("push", PushConfig),
    ("keys", KeysConfig),
    ("log", LogConfig),
)

Fail = Callable[[str, str], errors.Stalled]


def listen_address(text: str) -> tuple[str, int] | None:
    """`HOST:PORT` as (host, port), the host unbracketed; None when it is not one."""
    found = _LISTEN.fullmatch(text)
    if found is None or not 0 <= int(found["port"]) <= 65535:
        return None
    return found["host"].strip("[]"), int(found["port"])


def check(
    *,
    loop: LoopConfig,
    leader: LeaderConfig,
    server: ServerConfig,
    push: PushConfig,
    keys: KeysConfig,
    log: LogConfig,
    fail: Fail,
) -> None:
    """Rules on values and across fields; `fail(key, problem)` makes the error to raise."""
    if loop.interval <= 0 or loop.retry_base <= 0:
        raise fail("loop.interval" if loop.interval <= 0 else "loop.retry_base", "must be positive")
    if not 0 <= loop.jitter <= 1:
        raise fail("loop.jitter", "must be between 0 and 1")
    if loop.retry_max < loop.retry_base:
        raise fail("loop.retry_max", "must not be less than loop.retry_base")
    if loop.stall_retry_max_intervals < 1:
        raise fail("loop.stall_retry_max_intervals", "must be at least 1")
    if not _LEASE.fullmatch(leader.lease_name):
        raise fail("leader.lease_name", "must be an object name (DNS-1123 subdomain)")
    if min(leader.lease_duration, leader.renew_deadline, leader.retry_period) <= 0:
        raise fail("leader", "lease_duration, renew_deadline and retry_period must be positive")
    if not leader.retry_period < leader.renew_deadline < leader.lease_duration:
        raise fail(
            "leader.renew_deadline", "must be more than retry_period and less than lease_duration"
        )
    for key, value in (("server.listen", server.listen), ("keys.listen", keys.listen)):
        if listen_address(value) is None:
            raise fail(key, f"{value!r} is not HOST:PORT")
    _check_push(push, fail)
    if keys.renew_days < 0 or keys.check_every <= 0:
        key = "keys.renew_days" if keys.renew_days < 0 else "keys.check_every"
        raise fail(key, "must be positive (renew_days may be 0)")
    if log.format not in LOG_FORMATS:
        raise fail("log.format", f"must be one of {', '.join(LOG_FORMATS)}")
    if log.level not in LOG_LEVELS:
        raise fail("log.level", f"must be one of {', '.join(LOG_LEVELS)}")


def _check_push(push: PushConfig, fail: Fail) -> None:
    secrets = (push.github_secret_file, push.gitlab_token_file, push.hmac_secret_file)
    if push.listen is None:
        if any(s is not None for s in secrets):
            raise fail("push.listen", "a push secret is set but the receiver has no address")
        return
    if listen_address(push.listen) is None:
        raise fail("push.listen", f"{push.listen!r} is not HOST:PORT")
    if all(s is None for s in secrets):
        raise fail(
            "push",
            "the receiver needs github_secret_file, gitlab_token_file and/or hmac_secret_file:"
            " an unauthenticated push receiver would let anyone trigger passes",
        )
    if not _HEADER.fullmatch(push.hmac_header):
        raise fail("push.hmac_header", "must be an HTTP header name")
    if push.max_body_bytes < 1:
        raise fail("push.max_body_bytes", "must be positive")
