"""Structured logs on stderr: one JSON object a line (or plain text for a terminal).

Fields go in `extra={"fields": {...}}`, so every message keeps a fixed text and its variable
parts stay machine-readable for journald, Loki or jq.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec

from telemetryd.core.timestamps import now_utc

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": now_utc(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{now_utc()} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={_encode(v).decode()}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("telemetryd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
