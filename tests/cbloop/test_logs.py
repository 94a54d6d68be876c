"""Structured logging: JSON lines carry `extra=` fields; text lines append them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cbloop.logs import JsonFormatter, TextFormatter, configure_logging
from cbloop.settings import LoggingSettings


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("cbloop.test", logging.WARNING, __file__, 10, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_line_has_the_standard_fields_and_every_extra_field() -> None:
    line = JsonFormatter().format(
        _record("segment %s closed", "k1", kind="decisions", lines=12, ratio=0.5)
    )
    payload = orjson.loads(line)
    assert payload["level"] == "WARNING"
    assert payload["logger"] == "cbloop.test"
    assert payload["msg"] == "segment k1 closed"
    assert payload["ts"].endswith("+00:00")
    assert (payload["kind"], payload["lines"], payload["ratio"]) == ("decisions", 12, 0.5)
    assert "\n" not in line


def test_json_line_leaves_out_the_log_record_internals() -> None:
    payload = orjson.loads(JsonFormatter().format(_record("plain")))
    assert set(payload) == {"ts", "level", "logger", "msg"}


def test_json_line_turns_unserializable_extras_into_strings() -> None:
    payload = orjson.loads(JsonFormatter().format(_record("x", path=Path("/a/b"), ids={1})))
    assert payload["path"] == "/a/b"
    assert payload["ids"] == "{1}"


def _fail() -> None:
    raise ValueError("boom")


def test_json_line_includes_the_exception() -> None:
    try:
        _fail()
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    payload = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in payload["exc"]


def test_text_line_appends_extra_fields() -> None:
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    assert (
        formatter.format(_record("closed", kind="outcomes", lines=3))
        == "WARNING cbloop.test: closed kind=outcomes lines=3"
    )


def test_configure_logging_json_writes_json_lines_at_the_level(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(LoggingSettings(level="WARNING", format="json"))
    logger = logging.getLogger("cbloop.configured")
    logger.info("hidden")
    logger.warning("shown", extra={"experiment": "default"})
    lines = capsys.readouterr().err.splitlines()
    assert [orjson.loads(x)["msg"] for x in lines] == ["shown"]
    assert orjson.loads(lines[0])["experiment"] == "default"


def test_configure_logging_text_replaces_previous_handlers(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(LoggingSettings(level="INFO", format="json"))
    configure_logging(LoggingSettings(level="INFO", format="text"))
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("cbloop.configured").info("hello", extra={"n": 1})
    err = capsys.readouterr().err
    assert err.rstrip().endswith("INFO cbloop.configured: hello n=1")
