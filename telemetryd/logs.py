"""Structured logs on stderr: one JSON object a line (or plain text for a terminal).

Fields go in `extra={"fields": {...}}`, so every message keeps a fixed text and its variable
parts stay machine-readable for journald, Loki or jq.
"""

from __future__ import annotations

import logging
import sys
import time
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


#: How often a problem that lasts is logged again (with the count of what happened meanwhile).
LOG_INTERVAL_SECS = 10.0


class Throttle:
    """Says when a repeated message is due: the first time, then at most once per
    `interval_secs`, whether the problem ended in between or not (one that comes and goes
    must not be said each time); `due()` returns how many were held back meanwhile."""

    def __init__(self, interval_secs: float = LOG_INTERVAL_SECS) -> None:
        self.interval_secs = interval_secs
        self._last = -float("inf")
        self._held = 0
        self._said = False

    def due(self) -> int | None:
        """None: stay quiet (counted); else the number held back since the last message."""
        now = time.monotonic()
        if now - self._last < self.interval_secs:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        self._said = True
        return held

    def ended(self) -> bool:
        """The problem is over: True if a message said it since the last end (then its end
        is worth saying too)."""
        said, self._said = self._said, False
        return said
