"""Real services for tests: an OPA server and the webhook under gunicorn over TLS.

Owns starting, restarting and stopping those processes on 127.0.0.1 (through the same
`Process` as the control plane, so they die with the test run too) and waiting until they
answer. Nothing here fakes a service.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness import pki
from tests.harness.controlplane import LOOPBACK, REPO_ROOT, Process, free_port, tool, wait_http

POLICY_DIR = REPO_ROOT / "policies" / "admission"
# The decision cache the chart turns on (values.yaml `webhook.decisionCache`): the webhook the
# end-to-end tests and benches run is the one that is deployed.
CHART_DECISION_CACHE = str(
    yaml.safe_load((REPO_ROOT / "charts" / "gitwarden" / "values.yaml").read_text())["webhook"][
        "decisionCache"
    ]
)
# The OPA server's own API policy: queries only, as the chart's sidecar runs (`--authorization`).
AUTHZ_POLICY = REPO_ROOT / "policies" / "opaserver" / "authz.rego"
# OPA's Go runtime as the chart deploys it (values.yaml `webhook.opa.go`; a chart test keeps the
# two equal), so every test and bench measures the OPA that is shipped.
OPA_ENV = {"GOGC": "400", "GOMEMLIMIT": "200MiB"}


@dataclass
class OpaServer:
    """`opa run --server` with the admission policy and a data document, on a fixed port.

    Like the chart's sidecar, it refuses writes to its API (`AUTHZ_POLICY`) unless `writable`:
    a test that pushes data or policy to a running server asks for one.
    """

    workdir: Path
    data: dict[str, Any]
    port: int = field(default_factory=free_port)
    process: Process | None = None
    writable: bool = False
    args: tuple[str, ...] = ()
    """More `opa run` flags (a test's configuration)."""

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Start (or restart on the same port) and wait for /health."""
        data_file = self.workdir / "opa-data.json"
        data_file.write_text(json.dumps(self.data))
        self.process = Process(
            "opa",
            [
                str(tool("opa")),
                "run",
                "--server",
                f"--addr={LOOPBACK}:{self.port}",
                "--log-level=error",
                "--disable-telemetry",
                *([] if self.writable else ["--authorization=basic", str(AUTHZ_POLICY)]),
                *self.args,
                str(POLICY_DIR),
                str(data_file),
            ],
            self.workdir / "opa.log",
            env={**os.environ, **OPA_ENV},
        )
        self.process.start()
        wait_http(self.process, f"{self.url}/health")

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.process is not None:
            self.process.stop()


@dataclass
class WebhookServer:
    """`gitwarden webhook serve` (gunicorn, TLS) with settings from the environment."""

    workdir: Path
    serving: pki.KeyPair
    ca_pem: bytes
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @classmethod
    def self_signed(cls, workdir: Path, env: dict[str, str]) -> WebhookServer:
        """A server whose serving certificate comes from a CA of its own (`ca_pem`)."""
        ca = pki.CertificateAuthority("ca")
        return cls(workdir, ca.serving([LOOPBACK]), ca.cert_pem, env=env)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def cert_paths(self) -> tuple[Path, Path]:
        """The certificate and key files the server reads (rotation tests rewrite them)."""
        return self.workdir / "tls.crt", self.workdir / "tls.key"

    def tls_context(self) -> ssl.SSLContext:
        """A client context trusting the webhook CA."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def start(self) -> None:
        """Start gunicorn and wait until /healthz answers over TLS."""
        crt, key = self.serving.write(self.workdir, "tls")
        env = {
            **os.environ,
            "GITWARDEN_WEBHOOK_BIND": f"{LOOPBACK}:{self.port}",
            "GITWARDEN_WEBHOOK_TLS_CERT": str(crt),
            "GITWARDEN_WEBHOOK_TLS_KEY": str(key),
            "GITWARDEN_WEBHOOK_METRICS_DIR": str(self.workdir / "metrics"),
            **self.env,
        }
        self.process = Process(
            "webhook",
            [sys.executable, "-m", "gitwarden_cli.main", "webhook", "serve"],
            self.workdir / "webhook.log",
            env=env,
        )
        self.process.start()
        wait_http(self.process, f"{self.url}/healthz", context=self.tls_context())

    def stop(self) -> None:
        """Stop gunicorn (idempotent)."""
        if self.process is not None:
            self.process.stop()

    def post(self, body: bytes, path: str = "/validate") -> tuple[int, Any]:
        """POST `body` over TLS; the HTTP status and the decoded JSON answer."""
        conn = http.client.HTTPSConnection(
            LOOPBACK, self.port, context=self.tls_context(), timeout=10
        )
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def log(self) -> str:
        """Everything the server logged so far."""
        return (self.workdir / "webhook.log").read_text(errors="replace")
