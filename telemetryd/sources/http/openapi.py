"""The OpenAPI 3.1 document of the HTTP API (docs/http-api.md), served at GET /api/openapi.json.

Built in code rather than kept as a JSON file so the constants it names (Pioneer's event names,
the media types, the schema of an event) come from the modules that define them, and so it
ships inside the package with nothing to find at run time. tests/test_openapi.py runs
schemathesis against a live daemon with it: every status, header and body a request can get
must be described here, including the transport's own answers (telemetryd.sources.http.server).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import msgspec

from telemetryd import __version__
from telemetryd.core.reasons import Reason
from telemetryd.integrations.pioneer import PIONEER_EVENTS, SCHEMA_PREFIX

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"

Schema = dict[str, Any]

#: The §3 example: the body Jupyter Server's own POST /api/events takes.
_CONTENTS: Final = "https://events.jupyter.org/jupyter_server/contents_service/v1"
_EXAMPLE_EVENT: Final[Schema] = {
    "schema_id": _CONTENTS,
    "version": "1",
    "data": {"action": "save", "path": "a.ipynb"},
    "timestamp": "2026-11-22T01:30:21.131970Z",
}
_EXAMPLE_RECORD: Final[Schema] = {
    "__timestamp__": "2026-11-22T01:30:21.131970Z",
    "__schema__": _CONTENTS,
    "__schema_version__": "1",
    "__metadata_version__": 1,
    "__origin__": {"transport": "http", "user": "alice", "remote": "127.0.0.1"},
    "action": "save",
    "path": "a.ipynb",
}

DESCRIPTION: Final = """\
telemetryd is an out-of-process event bus for Jupyter telemetry. Clients send events; the
daemon validates each one against its registered JSON Schema, adds metadata (`__timestamp__`,
`__schema__`, `__schema_version__`, `__metadata_version__`, `__origin__`), applies the privacy
policy and hands the resulting record to every sink whose routing wants it. Rejected events go
to the dead-letter sink with the reason.

**Events in.** `POST /api/events` takes exactly the body of Jupyter Server's own
`POST /api/events`, so a client works against either. `POST /api/events/batch` takes many
events (NDJSON or a JSON array) and answers per event. `POST /api/pioneer` takes the body
JupyterLab Pioneer's `remote_exporter` posts. An event is *accepted* once it is validated and
queued for every sink that wants it.

**Records out.** `GET /api/events/subscribe` streams live records (Server-Sent Events or
WebSocket); `GET /api/schemas` lists what may be collected.

**Errors.** Every error body is JSON: `{"message": "...", "reason": "..."}` (see the `Error`
schema), sometimes with more keys. An unknown path is `404` (`not_found`); a known path with
another method is `405` (`method_not_allowed`) with an `Allow` header listing the methods it
takes (`HEAD` and `OPTIONS` are not served either: `405`). These two are described once, in
`components/responses` (`NotFound`, `MethodNotAllowed`), rather than under every path.

**Limits.** A request line and headers over `http_max_header_bytes` are `431`; a body over
`http_max_body_bytes` is `413`; a chunked body of absurdly many chunks is `400`
(`too_many_chunks`); a connection idle for `http_idle_timeout_secs` in the middle of a request,
a head not whole within `http_head_timeout_secs`, a body slower than `http_min_body_rate_bytes`
per second are `408`; at `http_max_connections` a new connection closes an idle one (or the
oldest unfinished head, `408`) to make room, and only when every one is busy with a request
does it get `503` and is closed. When
the sink queues are full (sinks with `when_full = "block"`), an ingest request waits up to
`http_enqueue_timeout_secs` and is then `503`; when `http_max_waiting_requests` already wait it
is `429` at once. Both carry `Retry-After` and mean none of the request's events was accepted.
A bug in an endpoint is a `500` (`internal_error`); the daemon goes on serving.

**Authentication.** `Authorization: token <token>` or `Authorization: Bearer <token>`, with
the tokens of `[[auth.tokens]]` (stored hashed); a token maps to the identity recorded as
`__origin__.user`. With `[auth.jupyterhub]`, a token that is none of them is JupyterHub's to
vouch for (`GET {api_url}/user`, cached): its user name is `__origin__.user`. Without tokens
or a hub the header is ignored. Otherwise a token that is not accepted is `403` on every
endpoint; no token is `401` where one is needed: ingest under `[auth] required`, `/healthz`
and `/readyz` under `protect_health`, `/metrics` under `protect_metrics`, and live records
always. A token JupyterHub must be asked about while it cannot answer is `503`
(`hub_unavailable`, with `Retry-After`), never let through.
"""


#: An event's rejection reasons (telemetryd.core.rejections), listed where they can appear.
_EVENT_REASONS: Final = ", ".join(
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


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _json(schema: Schema, **extra: Any) -> Schema:
    return {JSON: {"schema": schema, **extra}}


# -- schemas ------------------------------------------------------------------------------------

_ERROR: Final[Schema] = {
    "type": "object",
    "description": "Every error answer. `reason` is a stable machine-readable code (null on a "
    "rejected event of POST /api/events, as Jupyter Server answers; the code is then in "
    "`telemetryd_reason`); `message` explains it to a person. Some errors add keys.",
    "required": ["message", "reason"],
    "properties": {
        "message": {"type": "string"},
        "reason": {"type": ["string", "null"]},
        "telemetryd_reason": {
            "type": "string",
            "description": "Why an event was rejected (POST /api/events, where `reason` is null "
            f"for Jupyter Server's clients): {_EVENT_REASONS}.",
        },
    },
    "additionalProperties": True,
    "example": {"message": "no endpoint at /api/nope", "reason": "not_found"},
}

_EVENT: Final[Schema] = {
    "type": "object",
    "description": "One event: the body of Jupyter Server's POST /api/events. "
    "Unknown keys are ignored, as Jupyter Server ignores them.",
    "required": ["schema_id", "version", "data"],
    "properties": {
        "schema_id": {
            "type": "string",
            "description": "The `$id` of a registered schema (GET /api/schemas).",
        },
        "version": {
            # telemetryd.core.envelope.Envelope takes `str | int`: jupyter_events writes the version
            # as a string, older clients as a number; both name the same registered version.
            "type": ["string", "integer"],
            "description": "The schema's version, a string; an integer is accepted and read "
            'as its decimal string (`1` is `"1"`).',
        },
        "data": {
            "type": "object",
            "description": "The event's properties, validated against the schema. Names "
            "starting with `__` are reserved for the record's metadata.",
        },
        "timestamp": {
            # Envelope.timestamp is `str | None`: null is taken as absent.
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When the event happened, RFC 3339 (`...Z` or with an offset); "
            "absent or null: when the daemon received it.",
        },
    },
    "example": _EXAMPLE_EVENT,
}

_BATCH_RESULT_ITEM: Final[Schema] = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer", "minimum": 0, "description": "The event's position, from 0."},
        "status": {"type": "string", "enum": ["accepted", "rejected"]},
        "reason": {
            "type": "string",
            "description": f"Why the event was rejected: {_EVENT_REASONS}, or "
            f"`{Reason.SCHEMA_NOT_ALLOWED}` (the token's allowed_schemas).",
        },
        "message": {"type": "string", "description": "The rejection, for a person."},
    },
}

_BATCH_RESULT: Final[Schema] = {
    "type": "object",
    "description": "The verdict on every event of a batch, in order.",
    "required": ["accepted", "rejected", "results"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "results": {"type": "array", "items": _schema("BatchResultItem")},
    },
    "example": {
        "accepted": 1,
        "rejected": 1,
        "results": [
            {"index": 0, "status": "accepted"},
            {
                "index": 1,
                "status": "rejected",
                "reason": "unknown_schema",
                "message": "unknown schema 'https://example.org/nope': it is not registered",
            },
        ],
    },
}

_BATCH_ERROR: Final[Schema] = {
    "description": "`invalid_batch`: the JSON body is not an array (nothing was read). "
    "`all_rejected`: every event was rejected; `accepted`, `rejected` and `results` then give "
    "the per-event detail, as on a 207.",
    "allOf": [
        _schema("Error"),
        {
            "type": "object",
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {"type": "integer", "minimum": 0},
                "results": {"type": "array", "items": _schema("BatchResultItem")},
            },
        },
    ],
}

_NULLABLE_OBJECT: Final[Schema] = {"type": ["object", "null"]}
_NULLABLE_STRING: Final[Schema] = {"type": ["string", "null"]}

_PIONEER_BODY: Final[Schema] = {
    "type": "object",
    "description": "What JupyterLab Pioneer's `remote_exporter` POSTs for one event. "
    "Unknown keys are ignored, so a newer Pioneer is still accepted.",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["eventDetail"],
            "properties": {
                "eventDetail": {
                    "type": "object",
                    "required": ["eventName", "eventTime"],
                    "properties": {
                        "eventName": {"type": "string", "enum": list(PIONEER_EVENTS)},
                        "eventTime": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Milliseconds since the Unix epoch (Date.now()); "
                            "it becomes the record's `__timestamp__`.",
                        },
                        "eventInfo": {
                            **_NULLABLE_OBJECT,
                            "description": "The event's details. NotebookOpenEvent's "
                            "`environ` (the Jupyter server's whole environment, secrets "
                            "included) is removed unless `[pioneer] keep_environ` is on.",
                        },
                    },
                },
                "notebookState": {
                    "type": "object",
                    "properties": {
                        "sessionID": _NULLABLE_STRING,
                        "notebookPath": _NULLABLE_STRING,
                        "notebookContent": _NULLABLE_OBJECT,
                    },
                },
            },
        },
        "params": {
            **_NULLABLE_OBJECT,
            "description": "The exporter's configured params, recorded as they are.",
        },
        "env": {
            "type": "array",
            "description": "`[{name: value}]` for the environment variables the exporter "
            "lists; `WORKSPACE_ID` becomes the record's `workspaceId`.",
            "items": {"type": "object", "additionalProperties": _NULLABLE_STRING},
        },
    },
    "example": {
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
    },
}

_SCHEMA_VIEW: Final[Schema] = {
    "type": "object",
    "description": "A registered schema as shown to people: what is collected, at which "
    "versions, and which sinks receive it.",
    "required": ["$id", "versions", "sinks"],
    "properties": {
        "$id": {"type": "string"},
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "version",
                    "title",
                    "description",
                    "personal-data",
                    "allowed",
                    "properties",
                ],
                "properties": {
                    "version": {"type": "string"},
                    "title": {"type": "string", "description": "Empty when the schema has none."},
                    "description": {"type": "string"},
                    "personal-data": {
                        "type": ["boolean", "null"],
                        "description": "The schema's `personal-data`; null when it says nothing.",
                    },
                    "allowed": {
                        "type": "boolean",
                        "description": "Whether `[schemas] allowed` lets its events in.",
                    },
                    "properties": {
                        "type": "array",
                        "description": "The event's top-level properties.",
                        "items": {
                            "type": "object",
                            "required": [
                                "name",
                                "title",
                                "type",
                                "description",
                                "categories",
                                "required",
                            ],
                            "properties": {
                                "name": {"type": "string"},
                                "title": {"type": "string"},
                                "type": {
                                    "type": "string",
                                    "description": 'The JSON type(s): "string", '
                                    '"string|null" for several, "any" when unconstrained.',
                                },
                                "description": {"type": "string"},
                                "categories": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "Privacy categories (`unrestricted`, "
                                    "`user-identifier`, `personal-data`, ...).",
                                },
                                "required": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
        "sinks": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The sinks whose routing wants this schema's records.",
        },
    },
}

_SINK_READINESS: Final[Schema] = {
    "type": "object",
    "required": ["name", "ready", "healthy", "detail", "queued", "queue_max_events"],
    "properties": {
        "name": {"type": "string"},
        "ready": {
            "type": "boolean",
            "description": "Healthy, and its queue below 90 % of queue_max_events.",
        },
        "healthy": {"type": "boolean"},
        "detail": {"type": "string", "description": "Why it is unhealthy; often empty."},
        "queued": {"type": "integer", "minimum": 0},
        "queue_max_events": {"type": "integer", "minimum": 0},
    },
}

_RECORD: Final[Schema] = {
    "type": "object",
    "description": "A record, as sinks store it and subscribers receive it: "
    "jupyter_events' record shape with telemetryd's metadata, then the event's data keys.",
    "required": [
        "__timestamp__",
        "__schema__",
        "__schema_version__",
        "__metadata_version__",
        "__origin__",
    ],
    "properties": {
        "__timestamp__": {"type": "string", "format": "date-time"},
        "__schema__": {"type": "string"},
        "__schema_version__": {"type": "string"},
        "__metadata_version__": {"type": "integer", "const": 1},
        "__origin__": {
            "type": "object",
            "description": "Where the event came from, from authentication, never from the "
            "body: `transport` (`unix` or `http`), and `user` (SO_PEERCRED's, the token's "
            "identity, or the JupyterHub user's name), `kind` (`service` for a JupyterHub "
            "service's token), `uid`, `gid`, `pid`, `remote` as the transport knows them.",
            "required": ["transport"],
            "properties": {"transport": {"type": "string"}, "user": {"type": "string"}},
        },
    },
    "additionalProperties": True,
    "example": _EXAMPLE_RECORD,
}


def _sse_event(name: str, data: str) -> Schema:
    return {
        "properties": {
            "event": {"const": name},
            "data": {"contentMediaType": JSON, "contentSchema": _schema(data)},
        }
    }


_SUBSCRIPTION_EVENT: Final[Schema] = {
    "type": "object",
    "description": "One Server-Sent Event of GET /api/events/subscribe: `event: record` with "
    "a record's JSON as `data`, or `event: dropped` with a `Dropped` notice. (`: keepalive` "
    "comment lines are not events.)",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["record", "dropped"]},
        "data": {"type": "string"},
    },
    "oneOf": [_sse_event("record", "Record"), _sse_event("dropped", "Dropped")],
}

_DROPPED: Final[Schema] = {
    "type": "object",
    "description": "Sent to a subscriber after records meant for it were dropped because it "
    "did not read fast enough (its queue was full).",
    "required": ["dropped", "reason"],
    "properties": {
        "dropped": {"type": "integer", "minimum": 1},
        "reason": {"type": "string", "enum": ["subscriber_queue_full"]},
    },
}

# -- responses ----------------------------------------------------------------------------------

_RETRY_AFTER: Final[Schema] = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _error(description: str, **headers: Schema) -> Schema:
    response: Schema = {"description": description, "content": _json(_schema("Error"))}
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: Final[dict[str, Schema]] = {
    "BadRequest": _error(
        "Malformed HTTP (`bad_request`): the request could not be parsed as HTTP/1.1; "
        "`too_many_chunks`: a chunked body of more than 1,024 chunks plus one per 16 bytes. The "
        "connection is closed."
    ),
    "Unauthorized": _error(
        "`unauthenticated`: no usable `Authorization` header where this endpoint needs a token.",
        **{
            "WWW-Authenticate": {
                "description": 'Always `Bearer realm="telemetryd"`.',
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    "Forbidden": _error(
        "`forbidden`: the token sent matches none of `[[auth.tokens]]` and JupyterHub does not "
        "accept it (`[auth.jupyterhub]`), or accepts it for an owner its settings refuse (a "
        "token sent is always checked, also where none is needed)."
    ),
    "NotFound": _error("`not_found`: nothing is served at this path."),
    "MethodNotAllowed": _error(
        "`method_not_allowed`: the path is served, but not for this method.",
        Allow={
            "description": "The methods the path takes, comma-separated.",
            "required": True,
            "schema": {"type": "string"},
        },
    ),
    "RequestTimeout": _error(
        "`request_timeout`: the request was left unfinished for `http_idle_timeout_secs`; "
        "`head_timeout`: the request line and headers were not whole within "
        "`http_head_timeout_secs`; `body_too_slow`: after that grace, the body arrived slower "
        "than `http_min_body_rate_bytes` per second; `evicted`: the head was not whole when a "
        "new connection needed room (`http_max_connections`). The connection is closed."
    ),
    "PayloadTooLarge": _error(
        "`body_too_large`: the body (its Content-Length, or as much of a chunked body as was "
        "read) is over `http_max_body_bytes`. The connection is closed."
    ),
    "UnsupportedMediaType": _error(
        "`unsupported_media_type`: the Content-Type is not one this endpoint takes (or a "
        "charset other than UTF-8). Nothing was read or accepted."
    ),
    "TooManyRequests": _error(
        "`too_many_requests`: the sink queues are full and `http_max_waiting_requests` "
        "requests already wait for room. None of the request's events was accepted.",
        **{"Retry-After": _RETRY_AFTER},
    ),
    "HeadersTooLarge": _error(
        "`headers_too_large`: the request line and headers are over `http_max_header_bytes`. "
        "The connection is closed."
    ),
    "InternalError": _error(
        "`internal_error`: a bug in the daemon, which logged it. The daemon goes on serving."
    ),
    "ServiceUnavailable": _error(
        "`too_many_connections`: `http_max_connections` connections are already open, each "
        "busy with a request (an idle one would have been closed to make room); the "
        "connection is closed. `hub_unavailable`: the token had to be checked with JupyterHub "
        "(`[auth.jupyterhub]`), which could not be asked (unreachable, slower than "
        "`timeout_secs`, or an error). On ingest endpoints also `queue_full` (the sink queues "
        "stayed full for `http_enqueue_timeout_secs`), `disk_full` (a sink's disk buffer could "
        "not write them for as long: its disk is full or failing) and `stopping` (the daemon "
        "is shutting down): none of the request's events was accepted.",
        **{"Retry-After": _RETRY_AFTER},
    ),
}

# What guards an endpoint (telemetryd.sources.http.app's access kinds) and when it needs a token.
_INGEST: Final = "ingest"
_HEALTH: Final = "health"
_METRICS: Final = "metrics"
_SUBSCRIBE: Final = "subscribe"
_OPEN: Final = "open"

_AUTH_NOTES: Final = {
    _INGEST: "Needs a token when `[auth] required` is true.",
    _HEALTH: "Needs a token when `[auth] protect_health` is true.",
    _METRICS: "Needs a token when `[auth] protect_metrics` is true.",
    _SUBSCRIBE: "Needs a token whenever `[[auth.tokens]]` or `[auth.jupyterhub]` are "
    "configured: records may hold personal data.",
    _OPEN: "Needs no token.",
}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Schema],
    *,
    access: str,
    body: bool = False,
    ingest: bool = False,
    **extra: Any,
) -> Schema:
    """An operation with the answers every request can get from the transport added.

    `body`: the endpoint reads a body of given media types (else 415 cannot happen: an
    endpoint without a body ignores Content-Type). `ingest`: it hands events to the sink
    queues (429, and 503 for full queues or a stop).
    """
    common: dict[str, Schema] = {
        "400": _ref("responses", "BadRequest"),
        "403": _ref("responses", "Forbidden"),
        "408": _ref("responses", "RequestTimeout"),
        # The body limit holds on every endpoint: a GET with a large Content-Length is 413.
        "413": _ref("responses", "PayloadTooLarge"),
        "431": _ref("responses", "HeadersTooLarge"),
        "500": _ref("responses", "InternalError"),
        "503": _ref("responses", "ServiceUnavailable"),
    }
    if access != _OPEN:
        common["401"] = _ref("responses", "Unauthorized")
    if body:
        common["415"] = _ref("responses", "UnsupportedMediaType")
    if ingest:
        common["429"] = _ref("responses", "TooManyRequests")
    merged = {**common, **responses}
    return {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{description}\n\n{_AUTH_NOTES[access]}",
        **extra,
        "responses": dict(sorted(merged.items())),
    }


# -- paths --------------------------------------------------------------------------------------


def _paths() -> dict[str, Schema]:
    return {
        "/api/events": {
            "post": _operation(
                "postEvent",
                "ingest",
                "Send one event",
                "The body of Jupyter Server's `POST /api/events`: validated "
                "against its schema, recorded with the token's identity as `__origin__.user`, "
                "and queued for every sink that wants it. Answers as Jupyter Server does: 204, "
                "or 400 with `reason: null` (telemetryd's own code in `telemetryd_reason`). A "
                "rejected event also goes to the dead-letter sink.",
                {
                    "204": {"description": "Accepted: queued for every sink that wants it."},
                    "400": _error(
                        "The event is rejected (`reason` null, the code in "
                        "`telemetryd_reason`), or the HTTP request is malformed "
                        "(`bad_request`)."
                    ),
                    "403": _error(
                        "`forbidden`: the token is not valid; or `schema_not_allowed`: the "
                        "token's `allowed_schemas` do not include the event's schema."
                    ),
                },
                access=_INGEST,
                body=True,
                ingest=True,
                requestBody={
                    "required": True,
                    "description": "The event's JSON. As Jupyter Server, which ignores "
                    "Content-Type, the body is read as JSON under `application/json`, "
                    "`text/plain`, `application/x-www-form-urlencoded` (what `curl -d` sends) "
                    "or no Content-Type; any other type is 415.",
                    "content": {
                        **_json(_schema("Event"), example=_EXAMPLE_EVENT),
                        "text/plain": {
                            "schema": {"type": "string", "description": "The event's JSON."},
                            "example": msgspec.json.encode(_EXAMPLE_EVENT).decode(),
                        },
                    },
                },
            )
        },
        "/api/events/batch": {
            "post": _operation(
                "postEventBatch",
                "ingest",
                "Send many events",
                "Events as NDJSON (one event a line; an empty line is a rejected event) or "
                "as a JSON array. Each event is accepted or rejected on its own; the answer "
                "gives the verdict on each, in order. 200: all accepted (or the batch is "
                "empty); 207: some rejected; 400 `all_rejected`: none accepted, with the same "
                "detail.",
                {
                    "200": {
                        "description": "Every event accepted.",
                        "content": _json(_schema("BatchResult")),
                    },
                    "207": {
                        "description": "Some events accepted, some rejected (see `results`).",
                        "content": _json(_schema("BatchResult")),
                    },
                    "400": {
                        "description": "`all_rejected` (with the per-event results), "
                        "`invalid_batch` (a JSON body that is not an array), or malformed "
                        "HTTP (`bad_request`).",
                        "content": _json(_schema("BatchError")),
                    },
                },
                access=_INGEST,
                body=True,
                ingest=True,
                requestBody={
                    "required": True,
                    "content": {
                        NDJSON: {
                            "schema": {
                                "type": "string",
                                "description": "Events (§3), one JSON object a line.",
                            },
                            "example": "\n".join(
                                msgspec.json.encode(e).decode()
                                for e in (
                                    _EXAMPLE_EVENT,
                                    {**_EXAMPLE_EVENT, "data": {"action": "rename", "path": "b"}},
                                )
                            )
                            + "\n",
                        },
                        JSON: {
                            "schema": {"type": "array", "items": _schema("Event")},
                            "example": [_EXAMPLE_EVENT],
                        },
                    },
                },
            )
        },
        "/api/pioneer": {
            "post": _operation(
                "postPioneerEvent",
                "ingest",
                "Send a JupyterLab Pioneer event",
                "Point JupyterLab Pioneer's `remote_exporter` here. Its body is unwrapped into "
                f"an event of the shipped schema `{SCHEMA_PREFIX}<eventName>/v1` "
                "(eventDetail and notebookState flattened into one record, `eventTime` as the "
                "timestamp) and then handled as `POST /api/events`. Served only when "
                "`[pioneer] enabled` is true (off by default: 404).",
                {
                    "204": {"description": "Accepted: queued for every sink that wants it."},
                    "400": _error(
                        "`invalid_pioneer`: not a remote_exporter body (malformed JSON, wrong "
                        "shape, an unknown eventName, eventTime out of range); or the event "
                        "its body became is rejected by its schema (`reason` null, the code in "
                        "`telemetryd_reason`); or malformed HTTP (`bad_request`)."
                    ),
                    "403": _error(
                        "`forbidden`: the token is not valid; or `schema_not_allowed`: the "
                        "token's `allowed_schemas` do not include the event's schema."
                    ),
                    "404": _error("`not_found`: `[pioneer] enabled` is false (the default)."),
                },
                access=_INGEST,
                body=True,
                ingest=True,
                requestBody={"required": True, "content": _json(_schema("PioneerBody"))},
            )
        },
        "/api/events/subscribe": {"get": _subscribe()},
        "/api/schemas": {
            "get": _operation(
                "listSchemas",
                "schemas",
                "List the registered schemas",
                "Every registered schema with its versions, titles, descriptions, properties "
                "and privacy categories, and the sinks that receive it: what this daemon "
                "collects.",
                {
                    "200": {
                        "description": "The registered schemas.",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["schemas"],
                                "properties": {
                                    "schemas": {
                                        "type": "array",
                                        "items": _schema("SchemaView"),
                                    }
                                },
                            }
                        ),
                    }
                },
                access=_OPEN,
            )
        },
        "/api/schemas/{schema_id}": {
            "get": _operation(
                "getSchema",
                "schemas",
                "Show one registered schema",
                "One schema, by its `$id`, URL-encoded as one path segment "
                "(`/api/schemas/https%3A%2F%2Fevents.jupyter.org%2F...`).",
                {
                    "200": {
                        "description": "The schema.",
                        "content": _json(_schema("SchemaView")),
                    },
                    "404": _error("`unknown_schema`: no schema has this `$id`."),
                },
                access=_OPEN,
                parameters=[
                    {
                        "name": "schema_id",
                        "in": "path",
                        "required": True,
                        "description": "The schema's `$id`.",
                        "schema": {"type": "string", "minLength": 1},
                        "example": _CONTENTS,
                    }
                ],
            )
        },
        "/api/openapi.json": {
            "get": _operation(
                "getOpenApi",
                "meta",
                "This document",
                "The OpenAPI 3.1 document of this API, as this daemon serves it: every "
                "path, answer and body shape, the errors included.",
                {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": _json({"type": "object", "required": ["openapi", "paths"]}),
                    }
                },
                access=_OPEN,
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "health",
                "Liveness",
                "200 while the daemon runs and serves requests.",
                {
                    "200": {
                        "description": "Alive.",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            }
                        ),
                    }
                },
                access=_HEALTH,
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "health",
                "Readiness",
                "Ready when the daemon is not stopping, every sink is healthy and every sink "
                "queue is below 90 % of its `queue_max_events`. Lists every sink either way.",
                {
                    "200": {
                        "description": "Ready.",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["status", "sinks"],
                                "properties": {
                                    "status": {"const": "ready"},
                                    "sinks": {
                                        "type": "array",
                                        "items": _schema("SinkReadiness"),
                                    },
                                },
                            }
                        ),
                    },
                    "503": {
                        "description": "Not ready: `not_ready` (the sinks not ready are named "
                        "in `message`) or `stopping`, both with `sinks`; or "
                        "`too_many_connections` (with Retry-After, without `sinks`).",
                        "headers": {
                            # only the transport's too_many_connections sets it
                            "Retry-After": {**_RETRY_AFTER, "required": False}
                        },
                        "content": _json(
                            {
                                "allOf": [
                                    _schema("Error"),
                                    {
                                        "type": "object",
                                        "properties": {
                                            "sinks": {
                                                "type": "array",
                                                "items": _schema("SinkReadiness"),
                                            }
                                        },
                                    },
                                ]
                            }
                        ),
                    },
                },
                access=_HEALTH,
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "health",
                "Prometheus metrics",
                "The Prometheus text exposition (format 0.0.4) of every source's and sink's "
                "counters: received, sent, dropped (by reason), rejected (by reason), errors, "
                "queue depth, batch latency.",
                {
                    "200": {
                        "description": "The exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _error("`not_found`: metrics are not enabled."),
                },
                access=_METRICS,
            )
        },
    }


def _subscribe() -> Schema:
    return _operation(
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
        {
            "101": {
                "description": "Switching to WebSocket: one text message per record.",
                "headers": {
                    "Upgrade": {"required": True, "schema": {"const": "websocket"}},
                    "Sec-WebSocket-Accept": {"required": True, "schema": {"type": "string"}},
                },
            },
            "200": {
                "description": "A Server-Sent Events stream of records.",
                "content": {
                    "text/event-stream": {
                        # OpenAPI 3.1 has no itemSchema (3.2 does): `schema` describes each event,
                        # as schemathesis reads it, with its data's JSON in contentSchema.
                        "schema": _schema("SubscriptionEvent"),
                        "example": "event: record\ndata: "
                        + msgspec.json.encode(_EXAMPLE_RECORD).decode()
                        + "\n\n: keepalive\n\n"
                        'event: dropped\ndata: {"dropped":3,"reason":"subscriber_queue_full"}\n\n',
                    }
                },
            },
            "400": _error(
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
            "404": _error("`not_found`: subscriptions are off (`subscribe_max_subscribers = 0`)."),
            "503": _error(
                "`too_many_subscribers`: `subscribe_max_subscribers` are already served; or "
                "`too_many_connections`.",
                **{"Retry-After": _RETRY_AFTER},
            ),
        },
        access=_SUBSCRIBE,
        parameters=[
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
            }
        ],
    )


def document() -> dict[str, Any]:
    """The whole document. Its parts share module constants: read it, do not change it."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telemetryd",
            "version": __version__,
            "summary": "The out-of-process event bus for Jupyter telemetry.",
            "description": DESCRIPTION,
            "license": {"name": "BSD-3-Clause", "identifier": "BSD-3-Clause"},
        },
        "tags": [
            {"name": "ingest", "description": "Events in."},
            {"name": "records", "description": "Records out, live."},
            {"name": "schemas", "description": "What may be collected."},
            {"name": "health", "description": "Liveness, readiness and metrics."},
            {"name": "meta", "description": "This document."},
        ],
        # Both schemes name the same tokens. `{}` first: a token is optional unless the
        # configuration requires one (each operation's description says when).
        "security": [{}, {"token": []}, {"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Event": _EVENT,
                "BatchResult": _BATCH_RESULT,
                "BatchResultItem": _BATCH_RESULT_ITEM,
                "BatchError": _BATCH_ERROR,
                "PioneerBody": _PIONEER_BODY,
                "SchemaView": _SCHEMA_VIEW,
                "SinkReadiness": _SINK_READINESS,
                "Record": _RECORD,
                "Dropped": _DROPPED,
                "SubscriptionEvent": _SUBSCRIPTION_EVENT,
            },
            "responses": _RESPONSES,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Authorization: token <token>`, as Jupyter Server takes it "
                    "(the scheme in any case).",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`: the same tokens.",
                },
            },
        },
    }


@cache
def document_bytes() -> bytes:
    return msgspec.json.encode(document())
