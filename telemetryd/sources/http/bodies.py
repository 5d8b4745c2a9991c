"""The JSON bodies the HTTP API answers with (docs/http-api.md), as msgspec Structs.

Handlers encode these; telemetryd.sources.http.openapi documents the same classes (their
docstrings and field descriptions become the document's schemas), so a body and its
description cannot drift apart. The bodies it reads are the decoders' own Structs
(telemetryd.core.envelope.Envelope, telemetryd.integrations.pioneer.PioneerBody).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from telemetryd.core.reasons import DropReason, Reason

#: An event's rejection reasons (telemetryd.core.rejections), listed where they can appear.
_EVENT_REASONS = ", ".join(
    f"`{reason}`"
    for reason in (
        Reason.INVALID_JSON,
        Reason.INVALID_UTF8,
        Reason.INVALID_ENVELOPE,
        Reason.INVALID_TIMESTAMP,
        Reason.UNKNOWN_SCHEMA,
        Reason.UNKNOWN_VERSION,
        Reason.INVALID_DATA,
        Reason.RESERVED_FIELD,
        Reason.EMPTY_LINE,
        Reason.LINE_TOO_LONG,
    )
)

Count = Annotated[int, Meta(ge=0)]


class Error(msgspec.Struct):
    """Every error answer. `reason` is a stable machine-readable code (null on a rejected event
    of POST /api/events, as Jupyter Server answers; the code is then in `telemetryd_reason`);
    `message` explains it to a person. Some errors add keys."""

    message: str
    reason: str | None


class EventRejected(msgspec.Struct):
    """A rejected event of POST /api/events, answered as Jupyter Server answers it: `reason`
    null, telemetryd's own code in `telemetryd_reason`."""

    message: str
    reason: None
    telemetryd_reason: Annotated[
        str,
        Meta(
            description="Why the event was rejected (`reason` is null for Jupyter Server's "
            f"clients): {_EVENT_REASONS}."
        ),
    ]


class BatchResultItem(msgspec.Struct, gc=False):
    """The verdict on one event of a batch."""

    # gc=False: one per event of a batch, holding only strings and ints (never in a cycle);
    # untracked, a large batch's answer does not set off collections.

    index: Annotated[int, Meta(ge=0, description="The event's position, from 0.")]
    status: Literal["accepted", "rejected"]
    # UNSET, not None: an accepted event's item has neither key.
    reason: Annotated[
        str | UnsetType,
        Meta(
            description=f"Why the event was rejected: {_EVENT_REASONS}, or "
            f"`{Reason.SCHEMA_NOT_ALLOWED}` (the token's allowed_schemas)."
        ),
    ] = UNSET
    message: Annotated[str | UnsetType, Meta(description="The rejection, for a person.")] = UNSET


class BatchResult(msgspec.Struct):
    """The verdict on every event of a batch, in order."""

    accepted: Count
    rejected: Count
    results: list[BatchResultItem]


class AllRejected(Error):
    """`all_rejected`: every event of a batch was rejected; `accepted`, `rejected` and
    `results` give the per-event detail, as on a 207."""

    accepted: Count
    rejected: Count
    results: list[BatchResultItem]


class Healthy(msgspec.Struct):
    """Alive."""

    status: Literal["ok"]


class SinkReadiness(msgspec.Struct):
    """A sink's part in the daemon's readiness."""

    name: str
    ready: Annotated[
        bool, Meta(description="Healthy, and its queue below 90 % of queue_max_events.")
    ]
    healthy: bool
    detail: Annotated[str, Meta(description="Why it is unhealthy; often empty.")]
    queued: Count
    queue_max_events: Count


class Ready(msgspec.Struct):
    """Ready: every sink listed."""

    status: Literal["ready"]
    sinks: list[SinkReadiness]


class NotReady(Error):
    """`not_ready` (the sinks not ready are named in `message`) or `stopping`: every sink
    listed."""

    sinks: list[SinkReadiness]


class SchemaProperty(msgspec.Struct):
    """A top-level property of an event's data."""

    name: str
    title: str
    type: Annotated[
        str,
        Meta(
            description='The JSON type(s): "string", "string|null" for several, "any" when '
            "unconstrained."
        ),
    ]
    description: str
    categories: Annotated[
        list[str],
        Meta(
            description="Privacy categories (`unrestricted`, `user-identifier`, "
            "`personal-data`, ...)."
        ),
    ]
    required: bool


class SchemaVersion(msgspec.Struct):
    """One registered version of a schema."""

    version: str
    title: Annotated[str, Meta(description="Empty when the schema has none.")]
    description: str
    personal_data: Annotated[
        bool | None, Meta(description="The schema's `personal-data`; null when it says nothing.")
    ] = msgspec.field(name="personal-data")
    allowed: Annotated[bool, Meta(description="Whether `[schemas] allowed` lets its events in.")]
    properties: Annotated[
        list[SchemaProperty], Meta(description="The event's top-level properties.")
    ]


class SchemaView(msgspec.Struct):
    """A registered schema as shown to people: what is collected, at which versions, and which
    sinks receive it."""

    id: str = msgspec.field(name="$id")
    versions: list[SchemaVersion]
    sinks: Annotated[
        list[str], Meta(description="The sinks whose routing wants this schema's records.")
    ]


class SchemaList(msgspec.Struct):
    """The registered schemas."""

    schemas: list[SchemaView]


class Dropped(msgspec.Struct):
    """Sent to a subscriber after records meant for it were dropped because it did not read
    fast enough (its queue was full)."""

    dropped: Annotated[int, Meta(ge=1)]
    # A Literal cannot hold the enum member: the one value it takes, named once.
    reason: Annotated[
        str, Meta(extra_json_schema={"enum": [str(DropReason.SUBSCRIBER_QUEUE_FULL)]})
    ]
