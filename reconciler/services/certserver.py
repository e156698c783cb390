"""The `/v1/cert.pem` endpoint that sealing tools fetch the newest certificate from.

Owns the route and content type of the sealed-secrets controller (so `kubeseal --cert
http://…/v1/cert.pem` works) on an `httpserve` listener (stdlib, bounded). It serves only public
certificates, asks its caller for the PEM on every request so a renewed key is served at once,
and never sees a private key. Flask is reserved to the webhook; this must stay stdlib.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from reconciler import errors, httpserve

CERT_PATH = "/v1/cert.pem"
PEM_CONTENT_TYPE = "application/x-pem-file"


@dataclass(frozen=True)
class Settings:
    """Where the endpoint listens; built by the entry point."""

    host: str = "127.0.0.1"
    port: int = 8080


CertSource = Callable[[], bytes]


def _handler(source: CertSource) -> type[httpserve.Handler]:
    class CertHandler(httpserve.Handler):
        server_version = "gitwarden-cert"

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != CERT_PATH:
                self.reply(404, b"not found\n", "text/plain")
                return
            try:
                pem = source()
            except errors.ReconcileError:
                # No key yet (first start before generation): say so rather than a 500.
                self.reply(503, b"no sealing certificate yet\n", "text/plain")
                return
            self.reply(200, pem, PEM_CONTENT_TYPE)

        def do_HEAD(self) -> None:
            self.do_GET()

    return CertHandler


class CertServer:
    """Serves `/v1/cert.pem` on a background thread until `stop()` (or the `with` block ends)."""

    def __init__(self, settings: Settings, source: CertSource) -> None:
        self._listener = httpserve.Listener(
            settings.host, settings.port, _handler(source), name="cert-endpoint"
        )

    @property
    def port(self) -> int:
        return self._listener.port

    def start(self) -> CertServer:
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()

    def __enter__(self) -> CertServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
