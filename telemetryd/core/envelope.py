"""An event as clients send it (docs/events.md): the body of Jupyter Server's POST /api/events."""

from __future__ import annotations

from typing import Any

import msgspec


class Envelope(msgspec.Struct, gc=False):
    """Unknown keys are ignored, as Jupyter Server ignores them.

    gc=False: decoded JSON cannot refer back to the envelope, so it is never part of a cycle;
    untracked, the envelopes of a chunk do not set off collections of the young generation.

    `data` is decoded in the same pass and re-encoded into the record after validation. Passing
    it through as raw bytes (msgspec.Raw, a second decode for the validator, then slicing the
    bytes into the record) was measured, and cost more: 9.2k instructions an event against 7.6k
    (valgrind). It would also store bytes other than the ones validated: with a duplicated key,
    the validator sees the last value while a reader of the raw bytes may take the first.
    """

    schema_id: str
    version: str | int
    data: dict[str, Any]
    timestamp: str | None = None


envelope_decoder = msgspec.json.Decoder(Envelope)
