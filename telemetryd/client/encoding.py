"""Event lines (docs/events.md) built from pieces, so `emit` does the least work in the caller.

`emit` encodes only `data` (msgspec, one reused Encoder) and reads the clock; the line's head
(`{"schema_id":…,"version":…,"data":`) is encoded once per schema and version, and the emit
time is formatted into the timestamp by the writer, off the caller's thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from telemetryd.client.outbox import ENTRY_OVERHEAD_BYTES, Entry
from telemetryd.core.timestamps import format_timestamp, format_utc

#: Distinct (schema id, version) heads kept; more than this is a client bug, not a cache miss.
MAX_HEADS = 4096

_CLOSE = b"}\n"


def _default(value: Any) -> Any:
    """What msgspec cannot encode natively, as json.dumps(default=str) would write it."""
    return str(value)


class LineEncoder:
    def __init__(self) -> None:
        self.encode = msgspec.json.Encoder(enc_hook=_default).encode
        #: (schema id, version) → the line's head; read directly by ClientBase.emit.
        self.heads: dict[tuple[str, str | int], bytes] = {}

    def head(self, schema_id: str, version: str | int) -> bytes:
        key = (schema_id, version)
        head = self.heads.get(key)
        if head is None:
            encode = self.encode
            head = (
                b'{"schema_id":'
                + encode(str(schema_id))
                + b',"version":'
                + encode(str(version))
                + b',"data":'
            )
            if len(self.heads) >= MAX_HEADS:
                self.heads.clear()
            self.heads[key] = head
        return head

    def entry(
        self,
        schema_id: str,
        version: str | int,
        data: Any,
        timestamp: str | datetime | float | None = None,
    ) -> Entry:
        """Raises msgspec.EncodeError or TypeError when `data` is not JSON-encodable."""
        head = self.heads.get((schema_id, version)) or self.head(schema_id, version)
        body = self.encode(data)
        size = len(head) + len(body) + ENTRY_OVERHEAD_BYTES
        if timestamp is None:
            return head, body, time.time(), size
        return head, body, self.timestamp_tail(timestamp), size

    def timestamp_tail(self, timestamp: str | datetime | float) -> bytes:
        if isinstance(timestamp, datetime):
            # A naive datetime is taken as UTC, as jupyter_events' utcnow()-era callers meant.
            if timestamp.tzinfo is None:
                text = timestamp.isoformat(timespec="microseconds") + "Z"
            else:
                text = format_utc(timestamp)
        elif isinstance(timestamp, int | float):
            text = format_timestamp(float(timestamp))
        else:
            text = str(timestamp)  # the daemon checks it and names what is wrong
        return b',"timestamp":' + self.encode(text) + _CLOSE


def raw_entry(line: bytes) -> Entry:
    """An event line as given (telemetryd send): written unchanged, judged by the daemon."""
    line = line.rstrip(b"\r\n")
    return line, b"", b"\n", len(line) + ENTRY_OVERHEAD_BYTES


def render(entries: Iterable[Entry]) -> bytes:
    """The bytes written for a run of entries (the writer's hot loop: about 0.5 µs an event)."""
    parts: list[bytes] = []
    append = parts.append
    second = -1
    prefix = b""
    for head, body, tail, _ in entries:
        append(head)
        append(body)
        if type(tail) is float:
            whole = int(tail)
            if whole != second:  # the date and time of day, formatted once a second
                second = whole
                prefix = b',"timestamp":"' + format_timestamp(float(whole))[:-7].encode()
            micros = round((tail - whole) * 1e6)
            if micros < 1_000_000:
                append(b'%b%06dZ"}\n' % (prefix, micros))
            else:  # rounded up into the next second
                append(b',"timestamp":"' + format_timestamp(tail).encode() + b'"}\n')
        else:
            append(tail)  # type: ignore[arg-type]
    return b"".join(parts)


def schema_of(entry: Entry) -> str:
    """The schema id in an entry's head, for messages about it (rare path)."""
    head = entry[0]
    try:
        value = msgspec.json.decode(head + b"null}" if head.endswith(b":") else head)
    except msgspec.DecodeError:
        return "(not JSON)"
    if isinstance(value, dict):
        return str(value.get("schema_id", "(no schema_id)"))
    return "(not an object)"
