"""What travels on the bus: a finished record, already encoded as the bytes sinks store.

Records are built once on the hot path (docs/events.md, Records) and never re-encoded afterwards:
every sink receives the same `payload` bytes, so the cost of fan-out is one reference per sink.
"""

from __future__ import annotations

import msgspec


class Record(msgspec.Struct, gc=False, frozen=True):
    """One accepted event on its way to the sinks.

    gc=False: a Record holds only str, bytes and float, so it can never be part of a cycle,
    and skipping GC tracking makes the hundreds of thousands alive at once cheap to hold.
    """

    schema_id: str
    version: str
    payload: bytes  # the JSON record (docs/events.md), without a trailing newline
    received: float  # time.monotonic() when the daemon read it; for accept-to-sink latency


def record_head(schema_id: str, version: str) -> bytes:
    """The part of a record between `__timestamp__` and `__origin__`, constant per schema version.

    A record is `{"__timestamp__":"` + timestamp + `"` + head + origin + rest-of-data, so the
    hot path only joins precomputed pieces.
    """
    encode = msgspec.json.encode
    return (
        b'","__schema__":'
        + encode(schema_id)
        + b',"__schema_version__":'
        + encode(version)
        + b',"__metadata_version__":1,"__origin__":'
    )


RECORD_START = b'{"__timestamp__":"'
