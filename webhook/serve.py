"""Serving the webhook with gunicorn over TLS only.

Owns the gunicorn application object, its configuration derived from `WebhookSettings`, and
the TLS context: TLS 1.2 or newer, built once per worker and rebuilt when the certificate,
key or client CA file changes (checked at most every `cert_reload_seconds`). Connections
already open keep the context they started with, so a rotation drops no request; a
half-written pair (key and certificate not matching yet) keeps the previous context until the
pair is whole again. With a client CA, a client certificate must be one it signed, and the
app answers reviews only on connections that presented one, so only the API server (not
anyone who can reach the port) can ask for decisions. The TLS
handshake and the reading of requests happen in `webhook.worker` under deadlines; it answers
well-formed POSTs to `app.REVIEW_PATHS` itself, without gunicorn's HTTP parser.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from webhook import app as app_mod
from webhook import deadline, logbuffer, worker
from webhook import settings as settings_mod

log = logging.getLogger("gitwarden.webhook.tls")


class ReloadingTLS:
    """An SSLContext that follows its certificate files."""

    def __init__(
        self, cert: Path, key: Path, check_every: float, client_ca: Path | None = None
    ) -> None:
        self._cert, self._key, self._check_every = cert, key, check_every
        self._client_ca = client_ca
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._context = self._build()
        self._next_check = time.monotonic() + check_every

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        paths = (self._cert, self._key) + ((self._client_ca,) if self._client_ca else ())
        for path in paths:
            st = path.stat()  # follows the ..data symlink a mounted Secret swaps on update
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=str(self._cert), keyfile=str(self._key))
        if self._client_ca is not None:
            # A certificate the CA did not sign ends the handshake (the worker logs the peer and
            # the reason). None at all is let through the handshake so that kubelet probes reach
            # /healthz and /readyz; the app refuses reviews on such a connection.
            context.load_verify_locations(cafile=str(self._client_ca))
            context.verify_mode = ssl.CERT_OPTIONAL
        context.sslsocket_class = deadline.DeadlineSocket
        return context

    def context(self) -> ssl.SSLContext:
        """The current context, rebuilt first if the files changed since the last check."""
        now = time.monotonic()
        if now < self._next_check:
            return self._context
        with self._lock:
            if now >= self._next_check:
                self._next_check = now + self._check_every
                self._maybe_reload()
        return self._context

    def _maybe_reload(self) -> None:
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            context = self._build()
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS files changed but cannot be loaded yet; keeping the old ones: %s", exc)
            return
        self._stamp, self._context = stamp, context
        log.info("TLS certificate reloaded from %s", self._cert)


class WebhookServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    """gunicorn running `create_app(settings)` in each worker (created after fork)."""

    def __init__(self, settings: settings_mod.WebhookSettings) -> None:
        if settings.tls_cert is None or settings.tls_key is None:
            raise settings_mod.SettingsError(
                "the webhook serves TLS only: "
                "set GITWARDEN_WEBHOOK_TLS_CERT and GITWARDEN_WEBHOOK_TLS_KEY"
            )
        try:  # fail at start with the reason, not on the first connection
            ReloadingTLS(settings.tls_cert, settings.tls_key, 1.0, settings.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise settings_mod.SettingsError(
                f"cannot load the TLS files (GITWARDEN_WEBHOOK_TLS_CERT, _TLS_KEY, _CLIENT_CA): "
                f"{exc}"
            ) from None
        self._settings = settings
        self._tls: ReloadingTLS | None = None
        self._log_writers: list[logbuffer.LineWriter] = []
        # Read by `worker.GuardedThreadWorker` through its `TLSServing` port.
        self.handshake_timeout = settings.handshake_timeout
        self.request_timeout = settings.request_timeout
        # The POSTs the worker answers without gunicorn's parser (see webhook.worker).
        self.review_paths = app_mod.REVIEW_PATHS
        self.recall: worker.Recall | None = None
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        options: dict[str, Any] = {
            "bind": [s.bind],
            "workers": s.workers,
            "threads": s.threads,
            # gthread, with TLS handshakes and request heads read on its event loop under
            # deadlines, so slow clients cannot hold the threads (see webhook.worker).
            "worker_class": worker.GuardedThreadWorker,
            # gunicorn never wraps a socket itself (the worker does, with `server_context`);
            # the pair is set so it reports https and serves the https URL scheme.
            "certfile": str(s.tls_cert),
            "keyfile": str(s.tls_key),
            # The API server keeps connections to webhooks alive; don't close them every 2 s.
            # An idle kept-alive connection waits on the event loop, holding no thread.
            "keepalive": 30,
            "timeout": 30,
            "graceful_timeout": 20,
            "loglevel": s.log_level,
            "accesslog": None,
            "child_exit": self._child_exit,
            # Each worker writes its log lines in batches from one thread (webhook.logbuffer),
            # and writes what is still queued when it exits.
            "post_fork": self._post_fork,
            "worker_exit": self._worker_exit,
            "proc_name": "gitwarden-webhook",
            "limit_request_line": 8190,
            # gunicorn >= 25 opens a control socket (resize, reload, stop) in $HOME by default;
            # the webhook needs none, and one shared path would clash between instances.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def server_context(self) -> ssl.SSLContext:
        """The TLS context for a new connection (`worker.TLSServing`).

        Called per connection in each worker; the arbiter never calls it, so every worker
        builds its own context after fork.
        """
        if self._tls is None:
            s = self._settings
            if s.tls_cert is None or s.tls_key is None:  # checked in __init__; for the type checker
                raise settings_mod.SettingsError("TLS certificate and key are required")
            self._tls = ReloadingTLS(s.tls_cert, s.tls_key, s.cert_reload_seconds, s.client_ca)
        return self._tls.context()

    def _post_fork(self, server: Any, worker: Any) -> None:
        logbuffer.spare_caller_lookups()
        self._log_writers = logbuffer.install()

    def _worker_exit(self, server: Any, worker: Any) -> None:
        logbuffer.close(self._log_writers)

    def _child_exit(self, server: Any, worker: Any) -> None:
        if self._settings.metrics_dir is not None:
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]  # untyped in the library
                worker.pid, path=str(self._settings.metrics_dir)
            )

    def load(self) -> Any:
        app = app_mod.create_app(self._settings)
        # In the worker, after fork: its event loop answers cache hits through this.
        self.recall = app_mod.recall_of(app)
        return app


def run(settings: settings_mod.WebhookSettings) -> None:
    """Serve until terminated.

    The caller prepares `settings.metrics_dir` and exports it as PROMETHEUS_MULTIPROC_DIR
    before prometheus-client is first imported (the library picks its value store at import).
    """
    if settings.metrics_dir is None:
        raise settings_mod.SettingsError("serving needs a metrics directory shared by the workers")
    for stale in settings.metrics_dir.glob("*.db"):
        stale.unlink()  # samples of a previous run's workers
    WebhookServer(settings).run()
