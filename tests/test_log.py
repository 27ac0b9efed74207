"""Structured logs."""

from __future__ import annotations

import json
import logging

from crop.log import JsonFormatter


def test_json_lines_carry_extra_fields() -> None:
    record = logging.makeLogRecord({"name": "crop.pipeline", "levelname": "ERROR", "msg": "sentence failed",
                                    "id": "es-1", "error": "RuntimeError('x')"})
    event = json.loads(JsonFormatter().format(record))
    assert event["event"] == "sentence failed"
    assert event["level"] == "error"
    assert event["id"] == "es-1" and event["error"] == "RuntimeError('x')"
    assert event["time"].endswith("Z")
