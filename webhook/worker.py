"""The gunicorn worker that keeps slow clients off the request threads.

gunicorn's gthread worker hands every accepted connection to a thread, which then blocks in
the TLS handshake and in reading the request with no deadline: 20 connections that send one
byte each and stall hold every thread forever, and the API server's own requests (and with
them the HPA and break-glass) queue behind them. This worker does what can stall on the event
loop instead, non-blocking and under a deadline: the TLS handshake (`handshake_timeout`) and
the request (`request_timeout`, for every request of a kept-alive connection too): its head
up to the blank line and a body of the announced Content-Length, up to `BODY_BUFFER_LIMIT`
per connection and `WORKER_BUFFER_BUDGET` for all connections of a worker arriving at once;
bytes a client pipelined behind a request go back to the event loop the same way.
A thread gets a connection once its request has arrived (or past those limits), and the
socket it reads any rest from gives up at the same request deadline (it then reads as end of
stream, which the app answers 400, and the connection is closed). A connection past its
deadline is closed and logged with its peer address and stage, never its bytes. Which bytes
are buffered first never changes what gunicorn parses: everything read is handed back to its
parser as it came.

The fast path: once a connection's request is buffered, a strict parser of our own
(`webhook.fastpath`) looks at it. A well-formed review POST (`POST <review path>[?query]
HTTP/1.1`, one Content-Length and exactly that much body, plain visible-ASCII headers, no
Transfer-Encoding, Expect, Upgrade or Connection other than keep-alive) is answered by a pool
thread calling the app with a minimal environ and writing the answer in one send, with the
bytes gunicorn's Response would write; gunicorn's parser, environ builder and Response cost
about a fifth of the worker's Python time. Before that hand-off, the app's `recall` (the
`TLSServing` port) may answer the review from its decision cache; it never waits on OPA, so
that answer is sent from the event loop itself, non-blocking (a thread finishes a send the
socket cannot take at once), and no thread takes the connection up. A review whose facts need
a read from the API server (a subresource's parent) waits for it on the event loop too
(`Waiting`: the worker polls the read's socket beside the clients' and steps it when ready,
under the read's deadline), so neither the read nor the answer waits for a thread to be given
the interpreter; what still needs OPA then goes to a thread with what the app carried over
(parsed once, read once). Anything else goes to gunicorn with the buffered bytes untouched,
and gunicorn answers it as it always has.
All paths keep the same request count, keep-alive and stopping rules; the worker logs how many
requests took each when it exits.

Owns the worker class (the deadline-keeping socket is `webhook.deadline`'s) and the
`TLSServing` port through which the gunicorn application (`webhook.serve`) gives it the TLS
context, the timeouts, the review paths and the app's `recall`. It serves HTTP/1.1 only (the
context offers no ALPN); it must not change what a request is answered (the fast path's
answers are gunicorn's, byte for byte but the Date), only when a connection is given up and
who writes the answer. The fast path is off when gunicorn's request hooks or access log are
configured, since it calls neither.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from concurrent import futures
from functools import partial
from typing import Any, Protocol, cast

import gunicorn
from gunicorn import http, util
from gunicorn.http import wsgi
from gunicorn.workers import gthread

from webhook import deadline, fastpath

log = logging.getLogger("gitwarden.webhook.serving")

# A request head larger than this is handed to the thread as it is: gunicorn's parser applies
# its own line and header limits (answering 400) and reads the rest under the request deadline.
HEAD_BUFFER_LIMIT = 64 * 1024
# An AdmissionReview is a few KiB; one carrying two large objects is read on by the thread.
BODY_BUFFER_LIMIT = 1024 * 1024
# Memory a worker spends on requests still arriving; past it, requests go to threads early.
WORKER_BUFFER_BUDGET = 64 * 1024 * 1024
_HEAD_END = b"\r\n\r\n"
# How often a busy worker touches its heartbeat file (the arbiter's timeout is 30 s).
HEARTBEAT_SECONDS = 1.0


Answer = tuple[str, list[tuple[str, str]], bytes]
"""A WSGI answer in full: status line, headers, body."""


class Waiting(Protocol):
    """A review the application is answering without a thread, waiting on a read of its own:
    the worker waits for `sock` (writable when `wants_write`, else readable) on its event
    loop, then calls `advance`; past `deadline` (time.monotonic) it calls `expire`, which
    ends the wait. Neither ever blocks."""

    @property
    def sock(self) -> Any: ...

    @property
    def wants_write(self) -> bool: ...

    @property
    def deadline(self) -> float: ...

    def advance(self) -> Recalled:
        """What the review is now: an answer, still waiting (itself or another), a hand-off."""
        ...

    def expire(self) -> Recalled:
        """What it is once its wait is given up (never waiting again)."""
        ...


Recalled = Answer | dict[str, Any] | Waiting | None
"""What the application's `recall` makes of a review POST: the answer to send; the environ
keys a request thread is to be given with it (the app carries over what it already did); a
`Waiting`; or None, a request thread answers it from the start."""

Recall = Callable[[str, bytes, Callable[[], bool]], Recalled]
"""The application's answer to a review POST without waiting (path, body, and a call saying
whether the connection presented a verified client certificate). It never blocks: the event
loop calls it."""


class TLSServing(Protocol):
    """What the worker needs from the application: the context, the two deadlines, the
    paths whose POSTs the fast path may answer (empty: none) and, once the app is loaded in
    the worker, its `recall` (None: every fast-path request goes to a thread)."""

    handshake_timeout: float
    request_timeout: float
    review_paths: tuple[str, ...]
    recall: Recall | None

    def server_context(self) -> ssl.SSLContext:
        """The current server-side TLS context (rebuilt when its files change)."""
        ...


class _Conn(gthread.TConn):  # type: ignore[misc]  # gunicorn ships no type information
    """A connection whose TLS handshake and request head were completed on the event loop."""

    initialized: bool  # set by gunicorn's TConn
    parser: Any

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.deadline = 0.0
        self.head = bytearray()
        self.wanted: int | None = None  # bytes to buffer once the head's end is known
        self.handshaken = False
        self.waits_to_write = False  # registered for EVENT_WRITE (a handshake's full buffer)

    def init(self) -> None:
        # The socket is TLS already (wrapped and handshaken on the event loop); only the
        # HTTP/1.1 parser is left to create, primed with the head read on the event loop.
        if self.initialized:
            return
        self.initialized = True
        self.parser = http.get_parser(self.cfg, self.sock, self.client)
        self.parser.unreader.unread(self.take_head())

    def take_head(self) -> bytes:
        head, self.head, self.wanted = bytes(self.head), bytearray(), None
        return head


class GuardedThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]  # untyped library
    """gthread with the TLS handshake and request heads read on the event loop, under deadlines."""

    alive: bool  # set by gunicorn's Worker; False once the worker is asked to stop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._serving = cast(TLSServing, self.app)
        self._next_heartbeat = 0.0
        # Connections still in their handshake or arriving request, each with its deadline.
        self._arriving: deque[_Conn] = deque()
        self._buffered = 0  # bytes held by `_arriving` connections
        # Reviews the app answers on the event loop once a read of its own is in (`Waiting`).
        self._waiting: dict[Waiting, tuple[_Conn, fastpath.Request]] = {}
        # The fast path calls neither gunicorn's request hooks nor its access log, so it is
        # off when either is configured (webhook.serve configures neither).
        plain = self.cfg.accesslog is None and all(
            self.cfg.settings[hook].value is self.cfg.settings[hook].default
            for hook in ("pre_request", "post_request")
        )
        paths = self._serving.review_paths if plain else ()
        self._fast_paths = frozenset(p.encode() for p in paths)
        self._limits = _limits(self.cfg)
        self._base_environ: dict[str, Any] = {}  # gunicorn's per-worker keys, after fork
        self._date = (0, "")  # the Date header's value, and the second it names
        # Counted on the event loop; logged when the worker exits.
        self.fast_requests = 0
        self.recalled_requests = 0  # of the fast ones, answered on the event loop
        self.read_waits = 0  # reads the event loop waited for (`Waiting`)
        self.gunicorn_requests = 0

    def init_process(self) -> None:
        self._base_environ = wsgi.base_environ(self.cfg)
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:
            log.info(
                "worker %s answered %d requests on the fast path and handed %d to gunicorn; "
                "%d of the fast ones were answered from memory on the event loop, which "
                "waited for %d reads from the API server",
                self.pid,
                self.fast_requests,
                self.gunicorn_requests,
                self.recalled_requests,
                self.read_waits,
            )

    def notify(self) -> None:
        """Tell the arbiter this worker is alive, at most once a second.

        gunicorn calls it on every turn of the event loop, and each call is a system call
        (`utime` of the heartbeat file): under load, one per request. The arbiter only needs
        one within its `timeout` (30 s).
        """
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_SECONDS
            super().notify()

    # ------------------------------------------------------------------- event-loop stages

    def accept(self, listener: socket.socket) -> None:
        """Accept one connection and start its TLS handshake on the event loop."""
        try:
            raw, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        raw.setblocking(False)
        try:
            sock = self._serving.server_context().wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            log.info("dropping the connection from %s: %s", deadline.addr(addr), type(exc).__name__)
            raw.close()
            return
        if isinstance(sock, deadline.DeadlineSocket):
            sock.request_timeout = self._serving.request_timeout
        conn = _Conn(self.cfg, sock, addr, listener.getsockname())
        self.nr_conns += 1
        conn.deadline = time.monotonic() + self._serving.handshake_timeout
        self._arriving.append(conn)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._step, conn))
        self._step(conn, sock)

    def on_client_socket_readable(self, conn: _Conn, client: Any) -> None:
        """A kept-alive connection has bytes again: read its next request head here too."""
        self.keepalived_conns.remove(conn)
        conn.deadline = time.monotonic() + self._serving.request_timeout
        self._arriving.append(conn)
        self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._step, conn))
        self._step(conn, conn.sock)

    def _step(self, conn: _Conn, _fileobj: Any) -> None:
        """Advance the handshake or the head read as far as the bytes at hand allow."""
        try:
            if not conn.handshaken:
                conn.sock.do_handshake()
                conn.handshaken = True
                conn.deadline = time.monotonic() + self._serving.request_timeout
            ready = self._arrived(conn) or self._read_head(conn)
        except ssl.SSLWantReadError:
            if conn.waits_to_write:  # back to waiting for bytes (rare: only after a write wait)
                conn.waits_to_write = False
                self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._step, conn))
            return
        except ssl.SSLWantWriteError:
            conn.waits_to_write = True
            self.poller.modify(conn.sock, selectors.EVENT_WRITE, partial(self._step, conn))
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            # A failed handshake (no or an untrusted client certificate, a port scan, plain
            # HTTP on the TLS port) or a reset: nothing to answer.
            stage = "reading the request" if conn.handshaken else "TLS handshake"
            log.info(
                "closing the connection from %s: %s (%s)", deadline.addr(conn.client), exc, stage
            )
            self._drop(conn)
            return
        if ready:
            self._arriving.remove(conn)
            self.poller.unregister(conn.sock)
            self._buffered -= len(conn.head)
            request = (
                fastpath.parse(conn.head, self._fast_paths, self._limits)
                if self._fast_paths
                else None
            )
            if request is not None:
                conn.take_head()
                self.fast_requests += 1
                if self._recalled(conn, request):
                    return
                fs = self.tpool.submit(self._answer_fast, conn, request)
                fs.add_done_callback(
                    lambda fut: self.method_queue.defer(self._finish_fast, conn, fut)
                )
                return
            self.gunicorn_requests += 1
            if conn.initialized:  # a kept-alive connection: its parser reads the head next
                conn.parser.unreader.unread(conn.take_head())
            conn.data_ready = True
            self.enqueue_req(conn)

    def _read_head(self, conn: _Conn) -> bool:
        """Read what has arrived; True once the request is in (or too large to buffer)."""
        while True:
            chunk = conn.sock.recv(64 * 1024)  # SSLWantReadError once nothing is left
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "closed by the client")
            conn.head += chunk
            self._buffered += len(chunk)
            if self._arrived(conn):
                return True

    def _arrived(self, conn: _Conn) -> bool:
        if conn.wanted is None:
            end = conn.head.find(_HEAD_END)
            if end < 0:
                return len(conn.head) >= HEAD_BUFFER_LIMIT
            conn.wanted = end + len(_HEAD_END) + _body_to_buffer(bytes(conn.head[:end]))
        return len(conn.head) >= conn.wanted or self._buffered >= WORKER_BUFFER_BUDGET

    def finish_request(self, conn: _Conn, fs: Any) -> None:
        """After a request: close it if it ran past its deadline; pipelined bytes go back to
        the event loop (gunicorn would hand them to a thread, which a client stalling the rest
        of that request would hold); everything else as gunicorn does."""
        if isinstance(conn.sock, deadline.DeadlineSocket) and conn.sock.expired:
            self.nr_conns -= 1
            conn.close()
            return
        if self.alive and _kept_alive(fs) and conn.parser is not None:
            leftover = conn.parser.unreader.take_buffered()
            if leftover or conn.sock.pending():
                conn.sock.setblocking(False)
                conn.head += leftover
                self._buffered += len(leftover)
                conn.deadline = time.monotonic() + self._serving.request_timeout
                self._arriving.append(conn)
                self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._step, conn))
                self._step(conn, conn.sock)
                return
        super().finish_request(conn, fs)

    # -------------------------------------------------------------------- the fast path

    def _recalled(self, conn: _Conn, request: fastpath.Request) -> bool:
        """Answer a review POST here on the event loop if the app can without waiting; True if
        the request was taken up here (answered, waiting on a read, or handed to a thread with
        what the app carried over).

        The app's `recall` answers a decision-cache hit at once; a review that needs a read
        from the API server waits for it here (`Waiting`, advanced by `_advance`), never on a
        thread; the answer goes out in one non-blocking send (`_send_now`), as `_answer_fast`
        would send it, and the connection returns to the poller without a thread ever taking
        it up. False (nothing sent, nothing counted) sends the request to a thread as before.
        """
        recall = self._serving.recall
        if recall is None:
            return False
        try:
            recalled = recall(request.path, request.body, partial(_certified, conn.sock))
        except Exception as exc:
            # The type only: an exception's text could quote the request. The thread answers.
            log.error(  # noqa: TRY400
                "answering POST %s from memory failed (%s); a request thread answers it",
                request.path,
                type(exc).__name__,
            )
            return False
        if recalled is None:
            return False
        self._settle(conn, request, recalled)
        return True

    def _settle(
        self,
        conn: _Conn,
        request: fastpath.Request,
        recalled: Recalled,
        was: Waiting | None = None,
    ) -> None:
        """Send an answer, wait on a read, or hand the request to a thread (with the carry).

        `was`: the `Waiting` that was just stepped (it may go on waiting).
        """
        if isinstance(recalled, tuple):
            self.recalled_requests += 1
            self._send_now(conn, recalled)
        elif recalled is None or isinstance(recalled, dict):
            fs = self.tpool.submit(self._answer_fast, conn, request, recalled or {})
            fs.add_done_callback(lambda fut: self.method_queue.defer(self._finish_fast, conn, fut))
        else:
            if recalled is not was:  # a new read, not the same one waiting on
                self.read_waits += 1
            self._waiting[recalled] = (conn, request)
            event = selectors.EVENT_WRITE if recalled.wants_write else selectors.EVENT_READ
            self.poller.register(
                recalled.sock, event, _ReadStep(self._advance, conn, request, recalled)
            )

    def _advance(
        self, conn: _Conn, request: fastpath.Request, waiting: Waiting, _fileobj: Any
    ) -> None:
        """A waiting review's socket is ready: step it, and settle what it becomes."""
        self._unwait(waiting)
        self._step_waiting(conn, request, waiting, waiting.advance)

    def _step_waiting(
        self,
        conn: _Conn,
        request: fastpath.Request,
        waiting: Waiting,
        step: Callable[[], Recalled],
    ) -> None:
        try:
            recalled = step()
        except Exception as exc:
            # A bug; the API server sees a failed call and applies its failurePolicy.
            _answering_failed(conn, exc, request, " from the event loop")
            self.nr_conns -= 1
            conn.close()
            return
        self._settle(conn, request, recalled, waiting)

    def _unwait(self, waiting: Waiting) -> None:
        self._waiting.pop(waiting, None)
        with contextlib.suppress(KeyError, ValueError, OSError):  # its socket may be closed
            self.poller.unregister(waiting.sock)

    def _send_now(self, conn: _Conn, answer: Answer) -> None:
        """Send an answer from the event loop; what the socket cannot take at once, a thread's
        blocking send finishes. A failure closes the connection."""
        try:
            data, close = self._encoded(answer, self._counted())
            try:
                sent = conn.sock.send(data)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
        except Exception as exc:
            log.info(
                "closing the connection from %s: %s (answering)",
                deadline.addr(conn.client),
                type(exc).__name__,
            )
            self.nr_conns -= 1
            conn.close()
            return
        if sent < len(data):  # the socket's buffer is full: a thread waits to send the rest
            fs = self.tpool.submit(self._send, conn, data[sent:], close)
            fs.add_done_callback(lambda fut: self.method_queue.defer(self._finish_fast, conn, fut))
            return
        self._keep_or_close(conn, kept_alive=not close, deferred=False)

    def _counted(self) -> bool:
        """Count a fast-path request as gunicorn's handle_request does; True: close after it."""
        self.nr += 1
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            return True
        return False

    def _encoded(self, answer: Answer, close: bool) -> tuple[bytes, bool]:
        """The answer's bytes and whether they close the connection: `Connection: close` when
        `close` says so, the worker is stopping (checked after the app, so a stop that
        arrives meanwhile closes too) or it keeps too many connections."""
        close = (
            close
            or not self.alive
            or not self.cfg.keepalive
            or len(self.keepalived_conns) >= self.max_keepalived
        )
        status, headers, body = answer
        data = fastpath.encode_answer(
            status, headers, body, server=gunicorn.SERVER, date=self._http_date(), close=close
        )
        return data, close

    def _send(self, conn: _Conn, data: bytes, close: bool) -> bool:
        """Send (the rest of) an answer in a pool thread; True if the connection stays open."""
        try:
            # Blocking for the send, which a DeadlineSocket bounds by the request deadline.
            conn.sock.setblocking(True)
            conn.sock.sendall(data)
        except OSError as exc:
            log.info(
                "closing the connection from %s: %s (answering)", deadline.addr(conn.client), exc
            )
            return False
        return not close

    def _answer_fast(
        self, conn: _Conn, request: fastpath.Request, carried: dict[str, Any] | None = None
    ) -> bool:
        """Answer a review POST in a pool thread; True if the connection stays open.

        What gunicorn's handle_request does for such a request, without its parser, environ
        builder and Response: the request count and max_requests, the app's answer written in
        one send (`_encoded`). Anything raised closes the connection: nothing is half-answered
        or retried. `carried` (what the app's `recall` already did) joins the environ.
        """
        close = self._counted()
        try:
            environ = fastpath.environ(
                request,
                base=self._base_environ,
                sock=conn.sock,
                client=conn.client,
                server=conn.server,
                scheme="https" if self.cfg.is_ssl else "http",
            )
            if carried:
                environ.update(carried)
            answer, close = self._encoded(fastpath.call(self.wsgi, environ), close)
        except OSError as exc:
            log.info(
                "closing the connection from %s: %s (answering)", deadline.addr(conn.client), exc
            )
            return False
        except Exception as exc:
            _answering_failed(conn, exc, request)
            return False
        return self._send(conn, answer, close)

    def _finish_fast(self, conn: _Conn, fs: futures.Future[bool]) -> None:
        """Back on the event loop after a thread's fast-path answer."""
        self._keep_or_close(conn, kept_alive=_kept_alive(fs), deferred=True)

    def _keep_or_close(self, conn: _Conn, *, kept_alive: bool, deferred: bool) -> None:
        """After a fast-path answer, as gunicorn's finish_request treats a kept-alive answer
        (the connection may have no gunicorn parser). `deferred`: called from the method
        queue, so a next request already decrypted is read at once; otherwise (an answer
        sent on the event loop, inside `_step`) that read waits for the queue, so a client
        pipelining requests never makes the loop recurse."""
        try:
            if not kept_alive:
                self.nr_conns -= 1
                conn.close(graceful=True)
                return
            conn.sock.setblocking(False)
            if conn.sock.pending():  # decrypted bytes the poller would never report
                if deferred:
                    self._resume(conn)
                else:
                    self.method_queue.defer(self._resume, conn)
                return
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + gthread.STOP_KEEPALIVE_LINGER)
            self.keepalived_conns.append(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        except Exception:
            self.nr_conns -= 1
            conn.close()

    def _resume(self, conn: _Conn) -> None:
        """Read the next request of a connection whose bytes are already decrypted."""
        try:
            conn.deadline = time.monotonic() + self._serving.request_timeout
            self._arriving.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._step, conn))
            self._step(conn, conn.sock)
        except Exception:
            with contextlib.suppress(ValueError):
                self._arriving.remove(conn)
            self.nr_conns -= 1
            conn.close()

    def _http_date(self) -> str:
        """gunicorn's Date value, formatted once a second rather than once an answer."""
        second = int(time.time())
        cached = self._date
        if cached[0] != second:
            cached = (second, util.http_date(second))
            self._date = cached
        return cached[1]

    def _drop(self, conn: _Conn) -> None:
        self._arriving.remove(conn)
        self._buffered -= len(conn.head)
        with contextlib.suppress(KeyError, ValueError, OSError):  # never registered, or closed
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """gunicorn's sweep of waiting connections, plus those past their arrival deadline."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self._arriving if c.deadline <= now]:
            stage = "request" if conn.handshaken else "TLS handshake"
            timeout = (
                self._serving.request_timeout
                if conn.handshaken
                else self._serving.handshake_timeout
            )
            log.info(
                "closing the connection from %s: %s not complete within %.1f s",
                deadline.addr(conn.client),
                stage,
                timeout,
            )
            self._drop(conn)
        for waiting, (conn, request) in [
            (w, taken) for w, taken in self._waiting.items() if w.deadline <= now
        ]:
            self._unwait(waiting)
            self._step_waiting(conn, request, waiting, waiting.expire)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gunicorn's dispatch, with two changes: it wakes up in time for the earliest arrival
        or read deadline, not only once a second; and reads from the API server that are ready
        are stepped first, so a review whose answer is in does not wait behind every other
        connection ready in the same turn."""
        deadlines = [c.deadline for c in self._arriving] + [w.deadline for w in self._waiting]
        if deadlines:
            timeout = min(timeout, max(min(deadlines) - time.monotonic(), 0.0) + 0.01)
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        if self._waiting:
            events.sort(key=lambda event: not isinstance(event[0].data, _ReadStep))
        for key, _ in events:
            key.data(key.fileobj)


class _ReadStep(partial[None]):
    """The poller's callback for a read's socket (a partial of `_advance`), told apart from
    the clients' callbacks when events are dispatched."""


def _limits(cfg: Any) -> fastpath.Limits:
    """gunicorn's head limits, normalised as its parser does (see gunicorn.http.message)."""
    line = cfg.limit_request_line
    if line < 0 or line >= http.message.MAX_REQUEST_LINE:
        line = http.message.MAX_REQUEST_LINE
    fields = cfg.limit_request_fields
    if fields <= 0 or fields > http.message.MAX_HEADERS:
        fields = http.message.MAX_HEADERS
    size = cfg.limit_request_field_size
    if size <= 0:
        size = http.message.DEFAULT_MAX_HEADERFIELD_SIZE
    return fastpath.Limits(
        request_line=line, fields=fields, field_size=size, head=HEAD_BUFFER_LIMIT
    )


def _answering_failed(
    conn: _Conn, exc: Exception, request: fastpath.Request, where: str = ""
) -> None:
    """Log an unexpected failure to answer a fast-path request, whose connection is closed.

    The exception's type only: its text could quote the request.
    """
    log.error(
        "closing the connection from %s: %s answering POST %s%s",
        deadline.addr(conn.client),
        type(exc).__name__,
        request.path,
        where,
    )


def _certified(sock: Any) -> bool:
    """Whether the connection's TLS handshake verified a client certificate."""
    getpeercert = getattr(sock, "getpeercert", None)
    return bool(getpeercert is not None and getpeercert())


def _kept_alive(fs: Any) -> bool:
    """Whether the thread's future says the connection stays open for another request."""
    return bool(not fs.cancelled() and fs.exception() is None and fs.result() is True)


def _body_to_buffer(head: bytes) -> int:
    """How much body to wait for on the event loop: the one well-formed Content-Length.

    Anything else (none, several, chunked) is 0: gunicorn's parser decides, in the thread. So
    is a request with `Expect: 100-continue`, whose client sends the body only once gunicorn
    has answered "100 Continue".
    """
    lines = [line.lower() for line in head.split(b"\r\n")[1:]]
    if any(line.startswith(b"expect:") for line in lines):
        return 0
    values = [line[15:].strip() for line in lines if line.startswith(b"content-length:")]
    if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 12:
        return min(int(values[0]), BODY_BUFFER_LIMIT)
    return 0
