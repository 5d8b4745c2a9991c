"""Why an input was refused, and the dead-letter record that keeps it.

Every refused input becomes a `Rejection` with a stable `reason` code (a
telemetryd.core.reasons.Reason, for metrics and for clients to branch on) and a `message` that names
what is wrong in words. The dead-letter record is an event of telemetryd's own schema
`rejected_event`, so it travels and is stored like any other record.
"""

from __future__ import annotations

import base64
from typing import Any, Final

import msgspec

from telemetryd.core.record import RECORD_START, Record, record_head

REJECTED_EVENT_SCHEMA: Final = "https://events.telemetryd.org/telemetryd/rejected_event/v1"
REJECTED_EVENT_VERSION: Final = "1"
_HEAD: Final = record_head(REJECTED_EVENT_SCHEMA, REJECTED_EVENT_VERSION)

#: How much of a rejected input the dead-letter record keeps.
MAX_RAW_KEPT_BYTES: Final = 16 * 1024


class Rejection(msgspec.Struct, gc=False):
    reason: str
    message: str
    raw: bytes  # the input, possibly only its head (see raw_bytes)
    raw_bytes: int  # the size of the whole input
    line: int = 0  # the line's number on its connection (1-based), 0 when not from a stream
    schema_id: str | None = None
    version: str | None = None


_encode = msgspec.json.Encoder().encode


def _utf8_text(raw: bytes, *, truncated: bool) -> str | None:
    """The input as text, or None when it is not UTF-8 (then the record keeps base64).

    Cutting an input to MAX_RAW_KEPT_BYTES may split a multi-byte character: up to three
    trailing bytes of a truncated input are dropped before calling it binary.
    """
    for cut in range(4 if truncated else 1):
        try:
            return raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def dead_letter_record(
    rejection: Rejection, origin: bytes, timestamp: str, received: float
) -> Record:
    """The rejected_event record that keeps a refused input with its reason."""
    raw = rejection.raw[:MAX_RAW_KEPT_BYTES]
    body: dict[str, Any] = {"reason": rejection.reason, "message": rejection.message}
    text = _utf8_text(raw, truncated=len(raw) < rejection.raw_bytes)
    if text is not None:
        body["raw"] = text
        body["raw_encoding"] = "utf-8"
    else:
        body["raw"] = base64.b64encode(raw).decode("ascii")
        body["raw_encoding"] = "base64"
    body["raw_bytes"] = rejection.raw_bytes
    body["raw_truncated"] = len(raw) < rejection.raw_bytes
    if rejection.schema_id is not None:
        body["schema_id"] = rejection.schema_id
    if rejection.version is not None:
        body["version"] = rejection.version
    if rejection.line:
        body["line"] = rejection.line
    payload = b"".join((RECORD_START, timestamp.encode(), _HEAD, origin, b",", _encode(body)[1:]))
    return Record(REJECTED_EVENT_SCHEMA, REJECTED_EVENT_VERSION, payload, received)
