"""The batched log writer: every line, in order per thread, in far fewer writes than lines."""

from __future__ import annotations

import io
import logging
import threading
import time

from webhook import logbuffer


class CountingStream(io.StringIO):
    """A text stream that counts write calls (each one is a syscall on a real stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_from_many_threads_are_all_written_in_few_writes() -> None:
    """4 threads x 500 lines: all 2,000 arrive, each thread's in order, in under 100 writes."""
    stream = CountingStream()
    writer = logbuffer.LineWriter(stream, pause=0.05)
    writer.setFormatter(logging.Formatter("%(threadName)s %(message)s"))
    logger = _logger("gitwarden.test.logbuffer.many", writer)

    def emit(thread: int) -> None:
        for i in range(500):
            logger.info("t%d line %d", thread, i)

    threads = [threading.Thread(target=emit, args=(n,), name=f"emitter-{n}") for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2000
    for t in range(4):
        mine = [int(line.rsplit(" ", 1)[1]) for line in lines if f" t{t} line " in line]
        assert mine == list(range(500))
    assert stream.writes < 100, stream.writes


def test_close_writes_what_is_queued_and_later_lines_are_not_lost() -> None:
    """Lines queued during the writer's pause are written by close(); a late line still is."""
    stream = CountingStream()
    writer = logbuffer.LineWriter(stream, pause=5.0)  # the writer sleeps after its first write
    logger = _logger("gitwarden.test.logbuffer.close", writer)
    for i in range(50):
        logger.info("queued %d", i)
    writer.close()
    logger.info("after close")
    text = stream.getvalue()
    assert [f"queued {i}" for i in range(50)] == text.splitlines()[:50]
    assert text.endswith("after close\n")


def test_a_line_is_formatted_when_it_is_logged_not_when_it_is_written() -> None:
    """An argument changed after the call does not change the line."""
    stream = CountingStream()
    writer = logbuffer.LineWriter(stream, pause=0.5)
    logger = _logger("gitwarden.test.logbuffer.format", writer)
    logger.info("first")  # wakes the writer, which then pauses
    value = ["allowed"]
    logger.info("verdict %s", value)
    value[0] = "denied"
    writer.close()
    assert "verdict ['allowed']" in stream.getvalue()


def test_install_replaces_stream_handlers_keeping_level_and_format() -> None:
    """The root logger's plain stream handler becomes a writer on the same stream."""
    stream = CountingStream()
    root = logging.Logger("gitwarden-test-root")
    plain = logging.StreamHandler(stream)
    plain.setLevel(logging.WARNING)
    plain.setFormatter(logging.Formatter("X %(message)s"))
    root.addHandler(plain)
    writers = logbuffer.install(root)
    assert root.handlers == writers
    root.warning("kept")
    root.info("below the handler's level")
    logbuffer.close(writers)
    assert stream.getvalue() == "X kept\n"


def test_a_full_writer_holds_the_logging_thread_and_close_loses_none() -> None:
    """At `limit` waiting lines a logger waits (as on a full pipe); close() writes them all."""
    stream = CountingStream()
    writer = logbuffer.LineWriter(stream, pause=30.0, limit=10)
    logger = _logger("gitwarden.test.logbuffer.limit", writer)
    logger.info("first")  # the writer writes it, then pauses for 30 s
    for _ in range(500):  # 5 s at most for the writer's first write
        if stream.getvalue() == "first\n":
            break
        time.sleep(0.01)
    assert stream.getvalue() == "first\n"

    def hold() -> None:
        for i in range(25):
            logger.info("held %d", i)

    emitter = threading.Thread(target=hold)
    emitter.start()
    emitter.join(timeout=0.5)
    assert emitter.is_alive(), "11 lines past the first went into a 10-line buffer"
    assert stream.getvalue() == "first\n"  # nothing written during the pause
    writer.close()
    emitter.join(timeout=5)
    assert not emitter.is_alive()
    logger.info("late")
    assert stream.getvalue().splitlines() == ["first", *(f"held {i}" for i in range(25)), "late"]
