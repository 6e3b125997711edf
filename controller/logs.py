"""Structured logging: one line per event, JSON or key=value, with whatever `extra=` fields were given.

Callers pass context as `extra={...}`; secrets are never passed, and any field whose name looks
like a credential is masked as a second line of defence.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
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
        try:  # orjson: a few microseconds instead of ~20 for the line every delivery writes
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
