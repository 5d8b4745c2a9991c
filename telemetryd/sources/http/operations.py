"""The HTTP API's route table (docs/http-api.md): every operation with what routing needs and
what the OpenAPI document says of it.

telemetryd.sources.http.app routes by this table (path, method, the media types a body may
have, the access that guards it) and telemetryd.sources.http.openapi writes the document from
it (summary, description, the request and answer bodies as Structs, the statuses). An endpoint
added, removed or given another answer here changes both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from msgspec import Meta, json

from telemetryd.core.envelope import Envelope
from telemetryd.integrations.pioneer import SCHEMA_PREFIX, PioneerBody
from telemetryd.sources.http import sse
from telemetryd.sources.http.bodies import (
    AllRejected,
    BatchResult,
    Error,
    EventRejected,
    Healthy,
    NotReady,
    Ready,
    SchemaList,
    SchemaView,
)
from telemetryd.sources.http.messages import HEALTH, INGEST, JSON, METRICS, OPEN, SUBSCRIBE

NDJSON: Final = "application/x-ndjson"

#: POST /api/events reads its body as JSON under these declared types, as Jupyter Server does
#: (it ignores Content-Type): what curl -d, urllib and fetch send when the caller sets none.
JUPYTER_EVENT_TYPES: Final = (JSON, "", "text/plain", "application/x-www-form-urlencoded")

#: The header of an answer that asks the client to come back later.
RETRY_AFTER: Final[Mapping[str, Any]] = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


@dataclass(frozen=True, slots=True)
class Content:
    """A body of one media type: `type` is what msgspec describes it as (a Struct, a list of
    them, an annotated str), or `schema` a JSON Schema written out for what is no Struct."""

    type: Any = None
    example: Any = None
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One status of an operation. `bodies`: the JSON body's Structs (several: any one of
    them); `content`: a body of another media type."""

    description: str
    bodies: tuple[type, ...] = ()
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    content: Mapping[str, Content] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestBody:
    #: What the router takes (any other Content-Type is 415); "" for none sent.
    media_types: tuple[str, ...]
    #: What the document shows, by media type: those of `media_types` worth an example.
    content: Mapping[str, Content]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    #: A last segment `{name}` makes a prefix route: the rest of the path, URL-decoded, is the
    #: handler's parameter.
    path: str
    operation_id: str
    tag: str
    summary: str
    description: str
    access: str
    #: The endpoint's own answers; the transport's (telemetryd.sources.http.server), the
    #: router's and authentication's are added by the document from `access`, `request` and
    #: `ingest`.
    answers: Mapping[int, Answer]
    request: RequestBody | None = None
    #: Hands events to the sink queues: holds the read budget while it does, and may answer
    #: 429 or 503 when they are full.
    ingest: bool = False
    parameters: tuple[Mapping[str, Any], ...] = ()

    @property
    def media_types(self) -> tuple[str, ...]:
        """The Content-Types the router lets through; empty: no body expected."""
        return () if self.request is None else self.request.media_types

    @property
    def prefix(self) -> str | None:
        """The path before its `{name}` parameter, for a prefix route."""
        head, brace, _ = self.path.partition("{")
        return head if brace else None


def error_answer(description: str, **headers: Mapping[str, Any]) -> Answer:
    """An answer with the Error body."""
    return Answer(description, (Error,), headers)


#: The §3 example: the body Jupyter Server's own POST /api/events takes.
_CONTENTS: Final = "https://events.jupyter.org/jupyter_server/contents_service/v1"
_EXAMPLE_EVENT: Final[Mapping[str, Any]] = {
    "schema_id": _CONTENTS,
    "version": "1",
    "data": {"action": "save", "path": "a.ipynb"},
    "timestamp": "2026-11-22T01:30:21.131970Z",
}
EXAMPLE_RECORD: Final[Mapping[str, Any]] = {
    "__timestamp__": "2026-11-22T01:30:21.131970Z",
    "__schema__": _CONTENTS,
    "__schema_version__": "1",
    "__metadata_version__": 1,
    "__origin__": {"transport": "http", "user": "alice", "remote": "127.0.0.1"},
    "action": "save",
    "path": "a.ipynb",
}

#: A record, a keepalive and a gap of three records, as the stream's own encoder writes them.
_EXAMPLE_STREAM: Final = (
    sse.encode_batch([json.encode(EXAMPLE_RECORD)], 0) + sse.KEEPALIVE + sse.encode_batch([], 3)
).decode()
_EXAMPLE_PIONEER: Final[Mapping[str, Any]] = {
    "data": {
        "eventDetail": {
            "eventName": "NotebookSaveEvent",
            "eventTime": 1699962682425,
            "eventInfo": None,
        },
        "notebookState": {
            "sessionID": "09ceefc2-82af-41d0-b806-a76369748020",
            "notebookPath": "alpha.ipynb",
            "notebookContent": None,
        },
    },
    "params": None,
    "env": [{"WORKSPACE_ID": "ws-1"}],
}
_ACCEPTED: Final = Answer("Accepted: queued for every sink that wants it.")
_INVALID_TOKEN: Final = error_answer(
    "`forbidden`: the token is not valid; or `schema_not_allowed`: the token's "
    "`allowed_schemas` do not include the event's schema."
)

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "POST",
        "/api/events",
        "postEvent",
        "ingest",
        "Send one event",
        "The body of Jupyter Server's `POST /api/events`: validated against its schema, "
        "recorded with the token's identity as `__origin__.user`, and queued for every sink "
        "that wants it. Answers as Jupyter Server does: 204, or 400 with `reason: null` "
        "(telemetryd's own code in `telemetryd_reason`). A rejected event also goes to the "
        "dead-letter sink.",
        INGEST,
        {
            204: _ACCEPTED,
            400: Answer(
                "The event is rejected (`reason` null, the code in `telemetryd_reason`), or "
                "the HTTP request is malformed (`bad_request`).",
                (EventRejected, Error),
            ),
            403: _INVALID_TOKEN,
        },
        RequestBody(
            JUPYTER_EVENT_TYPES,
            {
                JSON: Content(Envelope, _EXAMPLE_EVENT),
                "text/plain": Content(
                    Annotated[str, Meta(description="The event's JSON.")],
                    json.encode(_EXAMPLE_EVENT).decode(),
                ),
            },
            "The event's JSON. As Jupyter Server, which ignores Content-Type, the body is read "
            "as JSON under `application/json`, `text/plain`, "
            "`application/x-www-form-urlencoded` (what `curl -d` sends) or no Content-Type; "
            "any other type is 415.",
        ),
        ingest=True,
    ),
    Operation(
        "POST",
        "/api/events/batch",
        "postEventBatch",
        "ingest",
        "Send many events",
        "Events as NDJSON (one event a line; an empty line is a rejected event) or as a JSON "
        "array. Each event is accepted or rejected on its own; the answer gives the verdict on "
        "each, in order. 200: all accepted (or the batch is empty); 207: some rejected; 400 "
        "`all_rejected`: none accepted, with the same detail.",
        INGEST,
        {
            200: Answer("Every event accepted.", (BatchResult,)),
            207: Answer("Some events accepted, some rejected (see `results`).", (BatchResult,)),
            400: Answer(
                "`all_rejected` (with the per-event results), `invalid_batch` (a JSON body "
                "that is not an array), or malformed HTTP (`bad_request`).",
                (AllRejected, Error),
            ),
        },
        RequestBody(
            (NDJSON, JSON),
            {
                NDJSON: Content(
                    Annotated[str, Meta(description="Events (§3), one JSON object a line.")],
                    "".join(
                        json.encode(event).decode() + "\n"
                        for event in (
                            _EXAMPLE_EVENT,
                            {**_EXAMPLE_EVENT, "data": {"action": "rename", "path": "b"}},
                        )
                    ),
                ),
                JSON: Content(list[Envelope], [_EXAMPLE_EVENT]),
            },
        ),
        ingest=True,
    ),
    Operation(
        "POST",
        "/api/pioneer",
        "postPioneerEvent",
        "ingest",
        "Send a JupyterLab Pioneer event",
        "Point JupyterLab Pioneer's `remote_exporter` here. Its body is unwrapped into an "
        f"event of the shipped schema `{SCHEMA_PREFIX}<eventName>/v1` (eventDetail and "
        "notebookState flattened into one record, `eventTime` as the timestamp) and then "
        "handled as `POST /api/events`. Served only when `[pioneer] enabled` is true (off by "
        "default: 404).",
        INGEST,
        {
            204: _ACCEPTED,
            400: Answer(
                "`invalid_pioneer`: not a remote_exporter body (malformed JSON, wrong shape, an "
                "unknown eventName, eventTime out of range); or the event its body became is "
                "rejected by its schema (`reason` null, the code in `telemetryd_reason`); or "
                "malformed HTTP (`bad_request`).",
                (Error, EventRejected),
            ),
            403: _INVALID_TOKEN,
            404: error_answer("`not_found`: `[pioneer] enabled` is false (the default)."),
        },
        RequestBody((JSON,), {JSON: Content(PioneerBody, _EXAMPLE_PIONEER)}),
        ingest=True,
    ),
    Operation(
        "GET",
        "/api/events/subscribe",
        "subscribe",
        "records",
        "Live records",
        """\
Records as the sinks get them, live, filtered by schema. Two transports on this path:

- **WebSocket** (RFC 6455) when the request carries `Upgrade: websocket` (with
  `Connection: Upgrade`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`): answered 101;
  each record is then one text message holding the record's JSON (schema `Record`), and a
  ping goes out every `subscribe_keepalive_secs` when nothing else is sent.
- **Server-Sent Events** otherwise: 200 `text/event-stream` (schema `SubscriptionEvent`), with
  - `event: record` and `data: <record JSON>` for each record (schema `Record`);
  - `event: dropped` and `data: {"dropped": N, "reason": "subscriber_queue_full"}` when records
    were dropped because the subscriber did not read fast enough (schema `Dropped`);
  - a `: keepalive` comment line every `subscribe_keepalive_secs` when nothing else is sent.

The stream goes on until the client disconnects or the daemon stops (a WebSocket is then
closed with 1001, going away). A token's
`allowed_schemas` limit which records it sees. At most `subscribe_max_subscribers` subscribers
are served at once.""",
        SUBSCRIBE,
        {
            101: Answer(
                "Switching to WebSocket: one text message per record.",
                headers={
                    "Upgrade": {"required": True, "schema": {"const": "websocket"}},
                    "Sec-WebSocket-Accept": {"required": True, "schema": {"type": "string"}},
                },
            ),
            200: Answer(
                "A Server-Sent Events stream of records.",
                content={
                    "text/event-stream": Content(
                        example=_EXAMPLE_STREAM,
                        # OpenAPI 3.1 has no itemSchema (3.2 does): `schema` describes each
                        # event, as schemathesis reads it, with its data's JSON in
                        # contentSchema. The stream is text, not a Struct: its schemas are
                        # written out in the document.
                        schema={"$ref": "#/components/schemas/SubscriptionEvent"},
                    )
                },
            ),
            400: error_answer(
                "`bad_query`: an unknown query parameter or an empty pattern; "
                "`bad_websocket_handshake`: `Upgrade` sent without a valid RFC 6455 handshake; "
                "or malformed HTTP (`bad_request`).",
                **{
                    "Sec-WebSocket-Version": {
                        "description": "`13`, on a refused WebSocket handshake (RFC 6455).",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                },
            ),
            404: error_answer(
                "`not_found`: subscriptions are off (`subscribe_max_subscribers = 0`)."
            ),
            503: error_answer(
                "`too_many_subscribers`: `subscribe_max_subscribers` are already served; or "
                "`too_many_connections`.",
                **{"Retry-After": RETRY_AFTER},
            ),
        },
        parameters=(
            {
                "name": "schema_id",
                "in": "query",
                "required": False,
                "style": "form",
                "explode": True,
                "description": "A glob pattern over schema ids (`*`, `?`, `[...]`, as a sink's "
                "`include`); repeat it for several. None: every schema the caller may see.",
                "schema": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "example": ["https://events.jupyter.org/jupyter_server/*"],
            },
        ),
    ),
    Operation(
        "GET",
        "/api/schemas",
        "listSchemas",
        "schemas",
        "List the registered schemas",
        "Every registered schema with its versions, titles, descriptions, properties and "
        "privacy categories, and the sinks that receive it: what this daemon collects.",
        OPEN,
        {200: Answer("The registered schemas.", (SchemaList,))},
    ),
    Operation(
        "GET",
        "/api/schemas/{schema_id}",
        "getSchema",
        "schemas",
        "Show one registered schema",
        "One schema, by its `$id`, URL-encoded as one path segment "
        "(`/api/schemas/https%3A%2F%2Fevents.jupyter.org%2F...`).",
        OPEN,
        {
            200: Answer("The schema.", (SchemaView,)),
            404: error_answer("`unknown_schema`: no schema has this `$id`."),
        },
        parameters=(
            {
                "name": "schema_id",
                "in": "path",
                "required": True,
                "description": "The schema's `$id`.",
                "schema": {"type": "string", "minLength": 1},
                "example": _CONTENTS,
            },
        ),
    ),
    Operation(
        "GET",
        "/api/openapi.json",
        "getOpenApi",
        "meta",
        "This document",
        "The OpenAPI 3.1 document of this API, as this daemon serves it: every path, answer "
        "and body shape, the errors included.",
        OPEN,
        {
            200: Answer(
                "The OpenAPI document.",
                content={
                    JSON: Content(schema={"type": "object", "required": ["openapi", "paths"]})
                },
            )
        },
    ),
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "health",
        "Liveness",
        "200 while the daemon runs and serves requests.",
        HEALTH,
        {200: Answer("Alive.", (Healthy,))},
    ),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "health",
        "Readiness",
        "Ready when the daemon is not stopping, every sink is healthy and every sink queue is "
        "below 90 % of its `queue_max_events`. Lists every sink either way.",
        HEALTH,
        {
            200: Answer("Ready.", (Ready,)),
            503: Answer(
                "Not ready: `not_ready` (the sinks not ready are named in `message`) or "
                "`stopping`, both with `sinks`; or `too_many_connections` (with Retry-After, "
                "without `sinks`).",
                (NotReady, Error),
                # only the transport's too_many_connections sets it
                {"Retry-After": {**RETRY_AFTER, "required": False}},
            ),
        },
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "health",
        "Prometheus metrics",
        "The Prometheus text exposition (format 0.0.4) of every source's and sink's counters: "
        "received, sent, dropped (by reason), rejected (by reason), errors, queue depth, batch "
        "latency.",
        METRICS,
        {
            200: Answer(
                "The exposition.",
                content={"text/plain": Content(schema={"type": "string"})},
            ),
            404: error_answer("`not_found`: metrics are not enabled."),
        },
    ),
)
