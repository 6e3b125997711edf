"""Structured logging: one line per event, JSON or key=value, with whatever `extra=` fields were given.

Callers pass context as `extra={...}`; secrets are never passed, and any field whose name looks
like a credential is masked as a second line of defence.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from controller.settings import LogFormat, LogLevel

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
_SENSITIVE = ("secret", "token", "password", "authorization", "signature")


@functools.lru_cache(maxsize=1024)
def _sensitive(key: str) -> bool:
    """Whether a field name looks like it could hold a credential (cached: names repeat)."""
    lowered = key.lower()
    return any(s in lowered for s in _SENSITIVE)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    attributes = vars(record)
    out: dict[str, Any] = {}
    for key in [k for k in attributes if k not in _STANDARD and not k.startswith("_")]:  # the `extra=` fields
        out[key] = "***" if _sensitive(key) else attributes[key]
    return out


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "msg", ...extra} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _dumps(line)


def info_line(logger: logging.Logger, msg: str, fields: Mapping[str, Any]) -> None:
    """`logger.info(msg, extra=fields)`, written straight to the stream under serve's own logging.

    Why: the record, filters, lock and formatter of the logging module cost about 50 µs a line, and
    every delivery writes one ("delivery handled"). When serve's JSON handler is the only one that
    would see the line (configure() installed it; no other handler, filter or non-propagating
    logger on the way), the same JSON line is built and written directly. Any other set-up (a test's
    caplog, the text format, extra handlers) takes the ordinary path, so nothing is ever lost.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_json_handler(logger)
    if handler is None:
        logger.info(msg, extra=dict(fields))
        return
    line: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": logger.name,
        "msg": msg,
    }
    for key, value in fields.items():
        line[key] = "***" if _sensitive(key) else value
    text = _dumps(line)
    handler.acquire()
    try:
        handler.stream.write(text + handler.terminator)
        handler.flush()
    finally:
        handler.release()


def _sole_json_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The root's JsonFormatter stream handler when it alone would handle an INFO line of `logger`."""
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.filters or node.handlers or not node.propagate:
            return None
        node = node.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or logging.root.filters:
        return None
    handler = handlers[0]
    if type(handler) is not logging.StreamHandler or type(handler.formatter) is not JsonFormatter:
        return None
    if handler.filters or handler.level > logging.INFO:
        return None
    return handler


def _dumps(line: dict[str, Any]) -> str:
    try:  # orjson: a few microseconds instead of ~20
        return orjson.dumps(line, default=str).decode()
    except TypeError:  # lone surrogates (undecodable header values), values orjson cannot take
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level msg key=value ...` for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        pairs = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname.lower():7} {record.getMessage()} {pairs}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class ClientErrorFilter(logging.Filter):
    """Rewrites aiohttp's reports of malformed requests into one INFO line without a traceback.

    aiohttp logs every request it cannot parse (bad request line, oversized header, broken chunking,
    undecodable Content-Encoding) at ERROR with a traceback, and the message quotes the offending
    line, which may be a client's `Authorization` or token header. These are the client's fault and
    are answered 400, so anyone on the network could otherwise flood the error log, and leak their
    own credentials into it. Only the exception's class name is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "malformed HTTP request refused", ()
            record.exc_info, record.exc_text = None, None
            record.error = type(exc).__name__
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


CLIENT_ERRORS = ClientErrorFilter()


def configure(level: LogLevel, fmt: LogFormat) -> None:
    """Install the formatter on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.value.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(CLIENT_ERRORS)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
