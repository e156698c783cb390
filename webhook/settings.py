"""How the webhook process runs: serving, TLS, OPA connection and failure behaviour.

Owns `WebhookSettings`, built once at the entry point from GITWARDEN_WEBHOOK_* variables and
passed down; nothing below the entry point reads the environment. The policy's own
configuration (who GitOps is, what is in scope) is `webhook.config`, not this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "GITWARDEN_WEBHOOK_"


def _help(text: str, shown_default: str | None = None) -> dict[str, str | None]:
    """A field's metadata: the help text `--help` and the README table are made from."""
    return {"help": text, "default": shown_default}


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable."""


@dataclass(frozen=True)
class WebhookSettings:
    """Serving settings, sized by default for a 2-core pod."""

    bind: str = field(
        default="0.0.0.0:8443",
        metadata=_help("address:port to listen on (a pod's own IP; the Service fronts it)"),
    )
    workers: int = field(default=2, metadata=_help("gunicorn worker processes: one per core"))
    threads: int = field(
        default=4,
        metadata=_help(
            "threads per worker: requests wait on OPA, so a few threads keep both cores busy"
        ),
    )
    tls_cert: Path | None = field(
        default=None,
        metadata=_help("PEM certificate chain (required; re-read when it changes)", "required"),
    )
    tls_key: Path | None = field(
        default=None, metadata=_help("PEM private key (required)", "required")
    )
    cert_reload_seconds: float = field(
        default=5.0,
        metadata=_help(
            "how often a worker checks the certificate, key and client CA files for rotation"
        ),
    )
    client_ca: Path | None = field(
        default=None,
        metadata=_help(
            "PEM CA bundle for client certificates: when set, reviews are answered (else 403) only "
            "on connections that presented a certificate it signed, the API server's (see "
            '"Only the API server may ask"); one it did not sign fails the TLS handshake; '
            "/healthz, /readyz and /metrics need none",
            "unset: no client certificate asked for",
        ),
    )
    handshake_timeout: float = field(
        default=3.0,
        metadata=_help(
            "seconds a new connection has to complete its TLS handshake before it is closed"
        ),
    )
    request_timeout: float = field(
        default=5.0,
        metadata=_help(
            "seconds each request has to arrive in full (head and body), on a new or kept-alive "
            "connection, before the connection is closed"
        ),
    )
    opa_url: str = field(default="http://127.0.0.1:8181", metadata=_help("the OPA server"))
    decision_path: str = field(default="admission/decision", metadata=_help("the rule queried"))
    opa_timeout: float = field(
        default=1.0,
        metadata=_help(
            "seconds per OPA call, at most 2.5: well under the webhook's timeoutSeconds (3)"
        ),
    )
    decision_cache: int = field(
        default=0,
        metadata=_help(
            "decisions each worker keeps for identical policy inputs, answered again while the "
            "OPA server that made them still serves with its policy and data fixed (it refuses "
            "writes to its API and loads no bundles; checked on every connection; see the "
            'README\'s "Decision cache"); the chart sets 4096',
            "0: off",
        ),
    )
    fail_open: bool = field(
        default=False,
        metadata=_help(
            "allow (with a warning and an audit annotation) when OPA is unavailable or slower than "
            "OPA_TIMEOUT, instead of denying; every such allow is counted and logged"
        ),
    )
    max_body_bytes: int = field(
        default=6 * 1024 * 1024,
        metadata=_help(
            "larger bodies get HTTP 400 (object and oldObject, each up to etcd's 1.5 MiB default)",
            "6 MiB",
        ),
    )
    path_annotation: str = field(
        default="gitwarden.dev/source-path",
        metadata=_help("the one annotation forwarded to the policy (for denials)"),
    )
    kubeconfig: Path | None = field(
        default=None,
        metadata=_help(
            "credentials for reading the parent of a subresource request", "unset: in-cluster"
        ),
    )
    admission_config: Path | None = field(
        default=None,
        metadata=_help(
            "the admission configuration file (the chart's ConfigMap): which parents to read",
            "unset: the built-in defaults",
        ),
    )
    metrics_dir: Path | None = field(
        default=None,
        metadata=_help(
            "prometheus-client multiprocess directory, so /metrics sums every worker",
            "a temporary directory",
        ),
    )
    log_level: str = field(default="info", metadata=_help("debug, info, warning or error"))

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads < 1:
            raise SettingsError(f"{PREFIX}WORKERS and {PREFIX}THREADS must be >= 1")
        if not 0 < self.opa_timeout <= 2.5:
            raise SettingsError(
                f"{PREFIX}OPA_TIMEOUT must be in (0, 2.5] seconds: it must stay well under the "
                "webhook's timeoutSeconds (3 by default) so a dead engine is answered in time"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError(f"{PREFIX}TLS_CERT and {PREFIX}TLS_KEY go together")
        for name in ("handshake_timeout", "request_timeout"):
            if not 0 < getattr(self, name) <= 60:
                raise SettingsError(f"{PREFIX}{name.upper()} must be in (0, 60] seconds")
        if not 0 <= self.decision_cache <= 1_000_000:
            raise SettingsError(f"{PREFIX}DECISION_CACHE must be in [0, 1000000] decisions")
        if self.max_body_bytes < 1024:
            raise SettingsError(f"{PREFIX}MAX_BODY_BYTES must be at least 1024")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookSettings:
        """Read GITWARDEN_WEBHOOK_<FIELD> variables; unset ones keep their defaults."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, str(f.type), raw)
        return cls(**values)  # type: ignore[arg-type]  # values are converted per field type


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, in declaration order."""
    rows = []
    for f in fields(WebhookSettings):
        shown = f.metadata["default"]
        if shown is None:
            shown = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        rows.append((PREFIX + f.name.upper(), shown, f.metadata["help"]))
    return rows


def _convert(name: str, type_name: str, raw: str) -> object:
    var = PREFIX + name.upper()
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"{var}: {raw!r} is not a {type_name}") from None
    if type_name == "bool":
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"{var}: {raw!r} is not true or false")
        return lowered in ("true", "1", "yes")
    if type_name.startswith("Path"):
        return Path(raw)
    return raw
