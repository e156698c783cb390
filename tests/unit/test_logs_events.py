"""Log lines (JSON and text, never a traceback) and the Event body (never a value, `default`)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator

import pytest

from reconciler import controlconfig, events, logs, status


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(fmt: str, level: str = "info") -> tuple[io.StringIO, logging.Logger]:
    out = io.StringIO()
    logs.configure(controlconfig.LogConfig(format=fmt, level=level), out)
    return out, logs.get("loop")


@pytest.mark.usefixtures("restore_logging")
def test_a_json_line_carries_the_references_and_nothing_unlisted() -> None:
    out, log = emit("json")
    log.info(
        "applied abc: 1 created",
        extra={"revision": "a" * 40, "object": "/ConfigMap/ns/a", "body": "s3cret"},
    )
    line = json.loads(out.getvalue())
    assert line["level"] == "info"
    assert line["logger"] == "gitwarden.loop"
    assert line["message"] == "applied abc: 1 created"
    assert line["revision"] == "a" * 40
    assert line["object"] == "/ConfigMap/ns/a"
    assert line["time"].endswith("Z")
    assert "body" not in line  # only the fields logs.FIELDS names
    assert "s3cret" not in out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_an_unexpected_error_is_logged_by_its_type_without_a_traceback() -> None:
    for fmt in ("json", "text"):
        out, log = emit(fmt)
        try:
            int("hunter2 is the value of a Secret")
        except ValueError:
            log.exception("pass failed")
        text = out.getvalue()
        assert "ValueError" in text
        assert "hunter2" not in text
        assert "Traceback" not in text
        assert len(text.strip().splitlines()) == 1


@pytest.mark.usefixtures("restore_logging")
def test_the_level_filters_and_the_client_library_never_logs_below_warning() -> None:
    out, log = emit("text", "warning")
    log.info("not shown")
    log.warning("shown", extra={"reason": "Busy"})
    logging.getLogger("urllib3.connectionpool").info("pool")
    assert out.getvalue().count("\n") == 1
    assert "warning gitwarden.loop: shown reason=Busy" in out.getvalue()
    emit("json", "debug")
    assert logging.getLogger("kubernetes").getEffectiveLevel() == logging.WARNING


def test_an_event_about_the_sync_goes_to_default_and_is_clipped() -> None:
    now = dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.UTC)
    body = events.body("prod", "uid-1", events.stalled("", "x" * 5000), now, "pod-a_1234")
    assert body["metadata"]["namespace"] == "default"
    assert body["metadata"]["name"].startswith("prod.")
    assert body["involvedObject"] == {
        "apiVersion": status.API_VERSION,
        "kind": "Sync",
        "name": "prod",
        "uid": "uid-1",
    }
    assert (body["type"], body["reason"]) == ("Warning", "Stalled")
    assert len(body["message"]) == events.MAX_MESSAGE
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-12-02T01:00:00Z"
    applied = events.applied("c" * 40, "2 created, 3 unchanged")
    assert applied.message == "applied cccccccccccc: 2 created, 3 unchanged"
    assert (
        events.body("prod", "u", applied, now, "i")["metadata"]["name"] != body["metadata"]["name"]
    )
