"""How the webhook process runs: serving, TLS, OPA connection and failure behaviour.

Owns `WebhookSettings`, built once at the entry point from GITWARDEN_WEBHOOK_* variables and
passed down; nothing below the entry point reads the environment. The policy's own
configuration (who GitOps is, what is in scope) is `webhook.config`, not this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

PREFIX = "GITWARDEN_WEBHOOK_"


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable."""


@dataclass(frozen=True)
class WebhookSettings:
    """Serving settings, sized by default for a 2-core pod."""

    bind: str = "0.0.0.0:8443"  # a pod listens on its own IP; the Service fronts it
    workers: int = 2
    """gunicorn worker processes: one per core."""
    threads: int = 4
    """Threads per worker: requests wait on OPA, so a few threads keep both cores busy."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cert_reload_seconds: float = 5.0
    """How often a worker checks the certificate files for rotation."""
    opa_url: str = "http://127.0.0.1:8181"
    decision_path: str = "admission/decision"
    opa_timeout: float = 1.0
    """Seconds per OPA call; must stay well under the webhook's timeoutSeconds."""
    fail_open: bool = False
    """Allow (with a warning and an audit annotation) when OPA is unavailable. Off: deny."""
    max_body_bytes: int = 6 * 1024 * 1024
    """An AdmissionReview carries object and oldObject, each up to etcd's 1.5 MiB default."""
    path_annotation: str = "gitwarden.dev/source-path"
    """The one annotation forwarded to the policy (for the denial message)."""
    kubeconfig: Path | None = None
    """Credentials for reading the parent of a subresource request; unset: in-cluster."""
    admission_config: Path | None = None
    """The admission configuration file (the chart's ConfigMap): which parents to read."""
    metrics_dir: Path | None = None
    """prometheus-client multiprocess directory, so /metrics sums every worker."""
    log_level: str = "info"

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
