"""Log lines written in batches by one thread per worker, not one write syscall per line.

Owns `LineWriter`: a logging handler that formats each record on the thread that logs it (so
the line says what was true then, and no argument is read later) and hands the finished line
to one writer thread. The writer writes whatever lines have queued up in one `write` and
flush, then waits `pause` seconds before the next, so a worker makes at most 1/`pause` write
syscalls a second however many requests it answers, and a line reaches the log within about
`pause` seconds. `close()` writes every line still waiting (gunicorn's worker exit hook calls
it, and so does interpreter exit); nothing is dropped while the process lives: when `limit`
lines are waiting, logging threads wait for the writer, as they would on a plain stream.
It never decides what is logged; the per-request line is `webhook.app`'s.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import IO


class LineWriter(logging.Handler):
    """Formats on the caller's thread, writes from its own thread in batches.

    The waiting lines are one list under one lock: a logging thread appends to it, and the
    writer takes the whole list at once (swapping in an empty one), so a batch of any size
    costs the writer one lock round, not one queue operation per line.
    """

    def __init__(self, stream: IO[str], *, pause: float = 0.05, limit: int = 100_000) -> None:
        super().__init__()
        self._stream, self._pause, self._limit = stream, pause, limit
        self._mutex = threading.Lock()  # guards _waiting, _stopping and _closed
        self._changed = threading.Condition(self._mutex)  # lines came, or room was made
        self._waiting: list[str] = []
        self._stopping = False  # close() began: the writer takes its last batch
        self._closed = False  # the writer is gone: lines are written where they are logged
        self._closing = threading.Event()  # ends the writer's pause at once
        self._writer = threading.Thread(target=self._run, name="gitwarden-log-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit without the handler-wide lock: `emit` guards what it shares."""
        kept = self.filter(record)
        if isinstance(kept, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = kept
        if kept:
            self.emit(record)
        return bool(kept)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a record that cannot be formatted: logging's own error report
            self.handleError(record)
            return
        with self._mutex:
            while len(self._waiting) >= self._limit and not self._stopping:
                self._changed.wait()  # the writer is behind: wait as on a full pipe
            if self._closed:  # after shutdown (late threads): write it now rather than lose it
                self._write([line])
                return
            self._waiting.append(line)
            if len(self._waiting) == 1:  # the writer may be waiting for a first line
                self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._mutex:
                while not self._waiting and not self._stopping:
                    self._changed.wait()
                batch, self._waiting = self._waiting, []
                last = self._stopping
                self._changed.notify_all()  # room for any logging thread held at the limit
            self._write(batch)
            if last:
                return
            self._closing.wait(self._pause)  # let lines gather: this bounds the syscalls

    def _write(self, batch: list[str]) -> None:
        if not batch:
            return
        try:
            self._stream.write("".join(batch))
            self._stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe): nowhere to write
            pass

    def close(self) -> None:
        """Write every waiting line and stop the writer (idempotent)."""
        with self._mutex:
            first = not self._stopping
            self._stopping = True
            self._changed.notify_all()
        if first:
            self._closing.set()
            self._writer.join(timeout=10)
            with self._mutex:  # lines the writer's last batch missed, then direct writes
                self._closed = True
                batch, self._waiting = self._waiting, []
                self._write(batch)
        super().close()


def install(root: logging.Logger | None = None) -> list[LineWriter]:
    """Replace the root logger's stream handlers by `LineWriter`s on the same streams.

    Called in each gunicorn worker after fork (threads do not survive a fork): the arbiter
    keeps its plain handler, whose level and format the writers take over.
    """
    root = root if root is not None else logging.getLogger()
    writers = []
    for handler in list(root.handlers):
        if type(handler) is not logging.StreamHandler:
            continue
        writer = LineWriter(handler.stream)
        writer.setLevel(handler.level)
        writer.setFormatter(handler.formatter)
        root.removeHandler(handler)
        root.addHandler(writer)
        writers.append(writer)
    return writers


def spare_caller_lookups() -> None:
    """Records without their caller's file, line and thread (the process id stays).

    The logging HOWTO's "Optimization" switches: no line the webhook writes names them, and
    each record otherwise walks up the stack for them. For a serving worker's process only.
    """
    logging._srcfile = None  # the documented switch is this attribute
    logging.logThreads = False
    logging.logMultiprocessing = False


def close(writers: list[LineWriter]) -> None:
    """Flush and stop the writers `install` made."""
    for writer in writers:
        writer.close()
