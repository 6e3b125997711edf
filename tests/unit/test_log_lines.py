"""The per-delivery log line's direct path writes exactly what the logging module would."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from controller.logs import JsonFormatter, TextFormatter, info_line

FIELDS = {"provider": "github", "delivery": "d-1", "updated": ["ns/a"], "token": "hunter2", "status": 200}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger as serve configures it (one JSON stream handler), writing into a buffer."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield out
    root.handlers[:] = saved
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_direct_line_is_the_logging_modules_line(stream: io.StringIO) -> None:
    logger = logging.getLogger("fleet_webhook.receiver")
    info_line(logger, "delivery handled", FIELDS)
    logger.info("delivery handled", extra=dict(FIELDS))
    direct, ordinary = lines(stream)
    assert direct.pop("time")
    assert ordinary.pop("time")
    assert direct == ordinary
    assert direct["token"] == "***"  # credential-looking names are masked on both paths


def test_other_set_ups_take_the_ordinary_path(stream: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("fleet_webhook.receiver")
    with caplog.at_level(logging.INFO):  # caplog adds its own handler: records must reach it
        info_line(logger, "delivery handled", FIELDS)
    assert [r.getMessage() for r in caplog.records] == ["delivery handled"]
    logging.getLogger().handlers[0].setFormatter(TextFormatter())
    info_line(logger, "delivery handled", FIELDS)
    assert "delivery handled" in stream.getvalue().splitlines()[-1]
    assert not stream.getvalue().splitlines()[-1].startswith("{")  # formatted as text, not by the JSON path


def test_nothing_is_written_below_the_level(stream: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    info_line(logging.getLogger("fleet_webhook.receiver"), "delivery handled", FIELDS)
    assert stream.getvalue() == ""
