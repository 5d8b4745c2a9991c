"""What the http sink's `format = "events"` sends and reads: records turned back into the
events (docs/events.md) they were made from, and a telemetryd batch endpoint's per-event answer."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from telemetryd.core.record import RECORD_START, Record, record_head

_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encode = msgspec.json.encode


def _flat_object(origin: bytes) -> bool:
    """Whether `origin`, which ends at its first `}`, is a whole object with no object inside:
    without escapes, an even count of quotes puts that `}` outside every string."""
    return (
        origin[:1] == b"{"
        and origin.count(b"{") == 1
        and origin.count(b'"') % 2 == 0
        and b"\\" not in origin
    )


_TIME_AT = len(RECORD_START)


class EventEncoder:
    """Turns records back into the events (docs/events.md) they were made from, keeping the
    record's timestamp.

    Records from the hot path have one layout (telemetryd.core.ingest): `{"__timestamp__":"<time>`,
    a head constant per schema version, the origin object, then the data's members. Slicing
    that layout costs a third of decoding the record; any other record is decoded."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        # The records of one read share everything before their data (time, schema, origin):
        # the last such prefix seen, and what replaces it and follows the data in the event.
        self._prefix = b"\x00"  # no record starts with it
        self._prefix_bytes = 1
        self._event_head = b""
        self._event_tail = b""

    def encode(self, record: Record) -> bytes:
        payload = record.payload
        if payload.startswith(self._prefix):  # a neighbour of the last record: no parsing
            return b"".join((self._event_head, payload[self._prefix_bytes :], self._event_tail))
        heads = self._heads.get((record.schema_id, record.version))
        if heads is None:
            heads = self._learn(record)
        head, event_head = heads
        # The time holds no quote: the first one after RECORD_START begins the head.
        at = payload.find(b'"', _TIME_AT)
        origin = at + len(head)
        end = payload.find(b"}", origin) + 1
        if (
            end
            and payload.startswith(head, at)
            and payload.startswith(RECORD_START)
            and _flat_object(payload[origin:end])
        ):
            data = payload[end + 1 :] if payload[end : end + 1] == b"," else payload[end:]
            if data[-1:] == b"}":  # the data's members and the record's closing brace
                tail = b',"timestamp":"' + payload[_TIME_AT:at] + b'"}'
                if payload[end : end + 1] == b",":
                    self._prefix = payload[: end + 1]
                    self._prefix_bytes = end + 1
                    self._event_head = event_head
                    self._event_tail = tail
                return b"".join((event_head, data, tail))
        return as_event(record)

    def _learn(self, record: Record) -> tuple[bytes, bytes]:
        key = (record.schema_id, record.version)
        event_head = (
            b'{"schema_id":'
            + _encode(record.schema_id)
            + b',"version":'
            + _encode(record.version)
            + b',"data":{'
        )
        heads = self._heads[key] = (record_head(*key), event_head)
        return heads


def as_event(record: Record) -> bytes:
    """The event (docs/events.md) a record was made from, with the record's timestamp.

    Values stay raw JSON: only the top level of the record is parsed."""
    fields = _fields.decode(record.payload)
    event: dict[str, Any] = {
        "schema_id": record.schema_id,
        "version": record.version,
        "data": {key: raw for key, raw in fields.items() if not key.startswith("__")},
    }
    timestamp = fields.get("__timestamp__")
    if timestamp is not None:
        event["timestamp"] = timestamp
    return _encode(event)


class BatchAnswer(msgspec.Struct):
    """The body of telemetryd's POST /api/events/batch (its per-event results)."""

    accepted: int = 0
    rejected: int = 0
    results: list[dict[str, Any]] = msgspec.field(default_factory=list)
    reason: str | None = None


_batch_answer = msgspec.json.Decoder(BatchAnswer)


def batch_answer_of(response: httpx.Response) -> BatchAnswer | None:
    """The per-event results of a telemetryd batch endpoint, or None for any other body."""
    try:
        return _batch_answer.decode(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
