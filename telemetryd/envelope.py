"""An event as clients send it (DESIGN.md §3): the body of Jupyter Server's POST /api/events."""

from __future__ import annotations

import msgspec


class Envelope(msgspec.Struct, gc=False):
    """Decoded with `data` left as raw bytes: it is validated after a second, full decode, and
    then copied into the record as it came, never re-encoded. Unknown keys are ignored, as
    Jupyter Server ignores them."""

    schema_id: str
    version: str | int
    data: msgspec.Raw
    timestamp: str | None = None


envelope_decoder = msgspec.json.Decoder(Envelope)
