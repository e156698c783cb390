"""The `/v1/cert.pem` endpoint that sealing tools fetch the newest certificate from.

Owns a small stdlib HTTP server (the route and content type of the sealed-secrets controller, so
`kubeseal --cert http://…/v1/cert.pem` works). It serves only public certificates, asks its
caller for the PEM on every request so a renewed key is served at once, and never sees a private
key. Flask is reserved to the webhook; this must stay stdlib.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from reconciler import errors

CERT_PATH = "/v1/cert.pem"
PEM_CONTENT_TYPE = "application/x-pem-file"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Where the endpoint listens; built by the entry point."""

    host: str = "127.0.0.1"
    port: int = 8080


CertSource = Callable[[], bytes]


def _handler(source: CertSource) -> type[http.server.BaseHTTPRequestHandler]:
    class CertHandler(http.server.BaseHTTPRequestHandler):
        server_version = "gitwarden-cert"
        sys_version = ""

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != CERT_PATH:
                self._reply(404, b"not found\n", "text/plain")
                return
            try:
                pem = source()
            except errors.ReconcileError:
                # No key yet (first start before generation): say so rather than a 500.
                self._reply(503, b"no sealing certificate yet\n", "text/plain")
                return
            self._reply(200, pem, PEM_CONTENT_TYPE)

        def do_HEAD(self) -> None:
            self.do_GET()

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # stdlib signature
            _log.debug("cert endpoint: " + format, *args)

    return CertHandler


class CertServer:
    """Serves `/v1/cert.pem` on a background thread until `stop()` (or the `with` block ends)."""

    def __init__(self, settings: Settings, source: CertSource) -> None:
        self._httpd = http.server.ThreadingHTTPServer(
            (settings.host, settings.port), _handler(source)
        )
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="cert-endpoint", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> CertServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> CertServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
