"""An event as clients send it (docs/events.md): the body of Jupyter Server's POST /api/events."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta


class Envelope(msgspec.Struct, gc=False):
    """One event: the body of Jupyter Server's POST /api/events. Unknown keys are ignored, as
    Jupyter Server ignores them."""

    # This docstring and the field descriptions are the OpenAPI document's (GET
    # /api/openapi.json); descriptions do not change what is decoded.
    #
    # gc=False: decoded JSON cannot refer back to the envelope, so it is never part of a cycle;
    # untracked, the envelopes of a chunk do not set off collections of the young generation.
    #
    # `data` is decoded in the same pass and re-encoded into the record after validation.
    # Passing it through as raw bytes (msgspec.Raw, a second decode for the validator, then
    # slicing the bytes into the record) was measured, and cost more: 9.2k instructions an
    # event against 7.6k (valgrind). It would also store bytes other than the ones validated:
    # with a duplicated key, the validator sees the last value while a reader of the raw bytes
    # may take the first.

    schema_id: Annotated[
        str, Meta(description="The `$id` of a registered schema (GET /api/schemas).")
    ]
    # jupyter_events writes the version as a string, older clients as a number; both name the
    # same registered version.
    version: Annotated[
        str | int,
        Meta(
            description="The schema's version, a string; an integer is accepted and read as "
            'its decimal string (`1` is `"1"`).'
        ),
    ]
    data: Annotated[
        dict[str, Any],
        Meta(
            description="The event's properties, validated against the schema. Names starting "
            "with `__` are reserved for the record's metadata."
        ),
    ]
    timestamp: Annotated[
        Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | None,
        Meta(
            description="When the event happened, RFC 3339 (`...Z` or with an offset); absent "
            "or null: when the daemon received it."
        ),
    ] = None


envelope_decoder = msgspec.json.Decoder(Envelope)
