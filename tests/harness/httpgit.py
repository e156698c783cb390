"""A git smart-HTTP server over TLS on 127.0.0.1, for fetch tests with the real git client.

Owns a small threaded HTTPS server that hands every request to `git http-backend` (git's own
CGI program for the smart HTTP protocol) and, optionally, demands HTTP basic credentials or
corrupts the packs it sends (`Faults`, for fault tests). The
client is the real `git`, so certificate checking is git's (libcurl's) own.
"""

from __future__ import annotations

import base64
import http.server
import os
import ssl
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness import pki
from tests.harness.controlplane import LOOPBACK


@dataclass
class Faults:
    """Switches a fault test flips while the server runs (mutable on purpose)."""

    corrupt_packs: bool = False  # flip a byte inside every pack an upload-pack answer carries


def _corrupted(payload: bytes) -> bytes:
    """The same answer with one byte of the first object's data flipped (framing kept)."""
    start = payload.find(b"PACK")
    if start < 0 or len(payload) <= start + 24:
        return payload
    at = start + 20  # past the 12-byte pack header and the first object's header
    return payload[:at] + bytes([payload[at] ^ 0xFF]) + payload[at + 1 :]


def _handler(
    root: Path, credentials: tuple[str, str] | None, faults: Faults
) -> type[http.server.BaseHTTPRequestHandler]:
    class GitHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._backend()

        def do_POST(self) -> None:
            self._backend()

        def _backend(self) -> None:
            if credentials is not None:
                expected = base64.b64encode(":".join(credentials).encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": urllib.parse.unquote(path),
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": LOOPBACK,
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            result = subprocess.run(
                ["git", "http-backend"],
                input=body,
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            head, _, payload = result.stdout.partition(b"\r\n\r\n")
            if faults.corrupt_packs and path.endswith("/git-upload-pack"):
                payload = _corrupted(payload)
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # stdlib signature
            return

    return GitHandler


class HttpsGitServer:
    """Serves repositories under `root` as https://127.0.0.1:<port>/<name>."""

    def __init__(self, root: Path, credentials: tuple[str, str] | None = None) -> None:
        self.faults = Faults()
        self.ca = pki.CertificateAuthority("git-https-ca")
        self._certs = tempfile.TemporaryDirectory(prefix="git-https-")
        crt, key = self.ca.serving([LOOPBACK]).write(Path(self._certs.name), "https")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(crt), str(key))
        self._httpd = http.server.ThreadingHTTPServer(
            (LOOPBACK, 0), _handler(root, credentials, self.faults)
        )
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    def url(self, name: str, userinfo: str = "") -> str:
        """The https URL of repository `name`, with optional `user:password@`."""
        at = f"{userinfo}@" if userinfo else ""
        return f"https://{at}{LOOPBACK}:{self.port}/{name}"

    def write_ca(self, path: Path) -> Path:
        """Write the CA that signed the server's certificate; return the path."""
        path.write_bytes(self.ca.cert_pem)
        return path

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the certificate files."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=30)
        self._certs.cleanup()


@contextmanager
def https_git_server(
    root: Path, credentials: tuple[str, str] | None = None
) -> Iterator[HttpsGitServer]:
    """A running server for the duration of the block."""
    server = HttpsGitServer(root, credentials)
    server.start()
    try:
        yield server
    finally:
        server.stop()
