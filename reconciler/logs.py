"""The reconciler's log lines: JSON (one object a line) for machines, text for people.

Owns the two formatters and `configure`, which the entry point calls once from `log.format` and
`log.level`. A line carries `time`, `level`, `logger`, `message` and, when the caller passes
them as `extra`, the references in `FIELDS` (`revision`, `object`, ...): names, commits, counts,
never an object's contents. No line ever carries a traceback: an expected error is logged by
its message (ours name objects, never values), an unexpected one by its type only (`error`),
because the text or the frame of an unexpected error may quote a Secret. Must not decide what
is logged: callers do.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

from reconciler import controlconfig

LOGGER = "gitwarden"
# The extra fields a line may carry, and nothing else a caller attaches to a record.
FIELDS = (
    "revision",
    "object",
    "objects",
    "stage",
    "reason",
    "result",
    "summary",
    "seconds",
    "delay",
    "managers",
    "holder",
    "kind",
    "error",
    "port",
    "push_port",
)
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    found = {key: getattr(record, key) for key in FIELDS if hasattr(record, key)}
    if record.exc_info and record.exc_info[0] is not None and "error" not in found:
        found["error"] = record.exc_info[0].__name__  # the type only, never the text
    return found


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        tail = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        head = f"{_time(record)} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        return f"{head} {tail}" if tail else head


def configure(settings: controlconfig.LogConfig, stream: TextIO | None = None) -> None:
    """Send every log record of the process to `stream` (stderr) in the configured format.

    The root logger gets the one handler, so library records (urllib3's pool warnings) come
    out in the same format, without tracebacks.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[settings.level])
    # The client library logs request bodies at debug level: never, whatever log.level says.
    for noisy in ("kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, _LEVELS[settings.level]))


def get(name: str) -> logging.Logger:
    """The logger `gitwarden.<name>`."""
    return logging.getLogger(f"{LOGGER}.{name}")
