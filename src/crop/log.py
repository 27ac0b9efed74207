"""Structured logs: one JSON object a line, with the `extra` fields a call passed (ids, counts, errors)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar

#: the id of the HTTP request being served (set by the services' middleware), added to every log line
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# attributes every LogRecord has; anything else came from `extra=` and is part of the event
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            event["request_id"] = rid
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def configure(level: str | None = None) -> None:
    """JSON lines on stderr; the level from `level` or CROP_LOG_LEVEL (default WARNING)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("CROP_LOG_LEVEL", "WARNING")).upper())
