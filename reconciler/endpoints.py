"""The reconciler's HTTP endpoints: health, readiness and metrics, and the push receiver.

Owns two `httpserve` listeners. The server listener (server.listen) answers `GET /healthz`
(200 while the process is live, else 503), `GET /readyz` (200 while ready: the leader, or a
standby that can reach the API server; 503 otherwise, with the detail) and `GET /metrics`
(Prometheus text). The push listener (push.listen, only when set; its own port so it can be
exposed to the Git host without exposing the rest) answers `POST /hook` only: a Content-Length
is required and must not exceed push.max_body_bytes (411, 413; the body is never read past
it), the request must pass `pushauth.verify` (401 and nothing runs), and a verified push gets
202 and calls `on_push()` once; `on_push` only wakes the loop, so the answer does not wait for
a pass. Never logs a body or a header's value, and never answers 500: a failing callback is a
503. Must not import the pipeline or a stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from reconciler import controlconfig, errors, httpserve, metrics, pushauth

HOOK_PATH = "/hook"
_log = logging.getLogger("gitwarden.endpoints")


@dataclass(frozen=True)
class Health:
    """What /healthz and /readyz answer; `detail` is one line for people (no secrets)."""

    live: bool
    ready: bool
    detail: str


class EndpointError(errors.Stalled):
    """A listen address is not HOST:PORT (config checks it first; this is the backstop)."""


def _address(text: str, key: str) -> tuple[str, int]:
    found = controlconfig.listen_address(text)
    if found is None:
        raise EndpointError(f"{key}: {text!r} is not HOST:PORT")
    return found


def _status_handler(
    health: Callable[[], Health], source: metrics.Metrics
) -> type[httpserve.Handler]:
    class StatusHandler(httpserve.Handler):
        def do_GET(self) -> None:
            route = self.path.split("?", 1)[0]
            if route == "/metrics":
                self.reply(200, source.render(), metrics.CONTENT_TYPE)
                return
            if route not in ("/healthz", "/readyz"):
                self.reply(404, b"not found\n")
                return
            try:
                now = health()
            except Exception:  # a probe must answer, and 503 is the answer
                _log.exception("health check failed")
                now = Health(live=False, ready=False, detail="health check failed")
            good = now.live if route == "/healthz" else now.live and now.ready
            text = ("ok" if good else "not ok") + (f": {now.detail}" if now.detail else "")
            self.reply(200 if good else 503, text.encode("utf-8", "replace") + b"\n")

        def do_HEAD(self) -> None:
            self.do_GET()

    return StatusHandler


def _push_handler(
    push: controlconfig.PushConfig,
    secrets: pushauth.Secrets,
    on_push: Callable[[], None],
) -> type[httpserve.Handler]:
    class PushHandler(httpserve.Handler):
        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != HOOK_PATH:
                self.reply(404, b"not found\n")
                return
            length = self._length()
            if length is None:
                return
            body = self.rfile.read(length)
            if len(body) != length:
                self.reply(400, b"body shorter than Content-Length\n")
                return
            verdict = pushauth.verify(self.headers, body, secrets)
            if not verdict.ok:
                # The reason names the scheme and header, never a value.
                _log.warning("push refused from %s: %s", self.client_address[0], verdict.reason)
                self.reply(401, b"unauthorized\n")
                return
            try:
                on_push()
            except Exception:  # never a 500; the loop's own log says more
                _log.exception("push verified (%s) but the loop was not woken", verdict.scheme)
                self.reply(503, b"not accepted, try again\n")
                return
            _log.info("push verified (%s): a pass starts", verdict.scheme)
            self.reply(202, b"accepted\n")

        def _length(self) -> int | None:
            values = self.headers.get_all("Content-Length") or []
            if self.headers.get("Transfer-Encoding") is not None or len(values) != 1:
                # Chunked bodies have no length to bound up front; two lengths are ambiguous.
                self.reply(411, b"one Content-Length is required\n")
                return None
            text = values[0].strip()
            if not (text.isascii() and text.isdigit()) or len(text) > 19:
                self.reply(400, b"bad Content-Length\n")
                return None
            length = int(text)
            if length > push.max_body_bytes:
                self.reply(413, b"body too large\n")
                return None
            return length

        def _not_allowed(self) -> None:
            self.reply(405, b"only POST\n", headers=[("Allow", "POST")])

        do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = _not_allowed

    return PushHandler


class Endpoints:
    """Both listeners; `start()` binds nothing new (the constructor bound the ports)."""

    def __init__(  # noqa: PLR0917 - the loop's contract names these in order
        self,
        server: controlconfig.ServerConfig,
        push: controlconfig.PushConfig,
        push_secrets: pushauth.Secrets | None,
        metrics: metrics.Metrics,
        health: Callable[[], Health],
        on_push: Callable[[], None],
    ) -> None:
        host, port = _address(server.listen, "server.listen")
        self._status = httpserve.Listener(
            host, port, _status_handler(health, metrics), name="status-endpoints"
        )
        self._push: httpserve.Listener | None = None
        if push.listen is not None:
            if push_secrets is None or not push_secrets.schemes():
                self._status.stop()
                raise EndpointError("push.listen is set but no push secret was loaded")
            push_host, push_port = _address(push.listen, "push.listen")
            try:
                self._push = httpserve.Listener(
                    push_host,
                    push_port,
                    _push_handler(push, push_secrets, on_push),
                    name="push-receiver",
                )
            except OSError:
                self._status.stop()
                raise

    @property
    def port(self) -> int:
        return self._status.port

    @property
    def push_port(self) -> int | None:
        return None if self._push is None else self._push.port

    def start(self) -> Endpoints:
        self._status.start()
        if self._push is not None:
            self._push.start()
        return self

    def stop(self) -> None:
        if self._push is not None:
            self._push.stop()
        self._status.stop()
