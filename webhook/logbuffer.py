"""Log lines written in batches by one thread per worker, not one write syscall per line.

Owns `LineWriter`: a logging handler that formats each record on the thread that logs it (so
the line says what was true then, and no argument is read later) and hands the finished line
to one writer thread. The writer writes whatever lines have queued up in one `write` and
flush, then waits `pause` seconds before the next, so a worker makes at most 1/`pause` write
syscalls a second however many requests it answers, and a line reaches the log within about
`pause` seconds. `close()` writes every line still queued (gunicorn's worker exit hook calls
it, and so does interpreter exit); nothing is dropped while the process lives: when `limit`
lines are waiting, logging threads wait for the writer, as they would on a plain stream.
It never decides what is logged; the per-request line is `webhook.app`'s.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from typing import IO

_STOP = object()


class LineWriter(logging.Handler):
    """Formats on the caller's thread, writes from its own thread in batches."""

    def __init__(self, stream: IO[str], *, pause: float = 0.05, limit: int = 100_000) -> None:
        super().__init__()
        self._stream, self._pause = stream, pause
        self._lines: queue.Queue[object] = queue.Queue(maxsize=limit)
        self._closed = False
        self._closing = threading.Event()  # ends the writer's pause at once
        self._writer = threading.Thread(target=self._run, name="gitwarden-log-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a record that cannot be formatted: logging's own error report
            self.handleError(record)
            return
        if self._closed:  # after shutdown (late threads): write it now rather than lose it
            self._write([line])
            return
        self._lines.put(line)

    def _run(self) -> None:
        while True:
            batch: list[str] = []
            item = self._lines.get()
            while item is not _STOP:
                batch.append(item)  # type: ignore[arg-type]  # only lines and _STOP are queued
                try:
                    item = self._lines.get_nowait()
                except queue.Empty:
                    break
            self._write(batch)
            if item is _STOP:
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
        """Write every queued line and stop the writer (idempotent)."""
        if not self._closed:
            self._closed = True
            self._closing.set()
            self._lines.put(_STOP)
            self._writer.join(timeout=10)
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
