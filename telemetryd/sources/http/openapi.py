"""The OpenAPI 3.1 document of the HTTP API (docs/http-api.md), served at GET /api/openapi.json.

Generated from the route table the router uses (telemetryd.sources.http.operations): its paths,
operations and statuses, and, through msgspec.json.schema_components, the Structs of every JSON
body (telemetryd.sources.http.bodies, and the decoders' Envelope and PioneerBody). What is kept
here is prose (the API's description, the tags), the answers of the transport every operation
can get (telemetryd.sources.http.limits), and the schemas of the subscription's stream, which is
text rather than a Struct. tests/test_openapi.py runs schemathesis against a live daemon with
it: every status, header and body a request can get must be described.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import msgspec

from telemetryd import __version__
from telemetryd.sources.http.bodies import Dropped
from telemetryd.sources.http.messages import HEALTH, INGEST, JSON, METRICS, OPEN, SUBSCRIBE
from telemetryd.sources.http.operations import (
    EXAMPLE_RECORD,
    OPERATIONS,
    RETRY_AFTER,
    Answer,
    Content,
    Operation,
    error_answer,
)

Schema = dict[str, Any]

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


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


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
    "example": EXAMPLE_RECORD,
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

#: Component schemas that are no Struct: the subscription's stream is text.
_STREAM_SCHEMAS: Final[dict[str, Schema]] = {
    "Record": _RECORD,
    "SubscriptionEvent": _SUBSCRIPTION_EVENT,
}
#: Examples of generated components, by name.
_EXAMPLES: Final[dict[str, Any]] = {
    "Error": {"message": "no endpoint at /api/nope", "reason": "not_found"},
    "BatchResult": {
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


#: The answers of the transport, the router and authentication, named once in
#: components/responses.
_RESPONSES: Final[dict[str, Answer]] = {
    "BadRequest": error_answer(
        "Malformed HTTP (`bad_request`): the request could not be parsed as HTTP/1.1; "
        "`too_many_chunks`: a chunked body of more than 1,024 chunks plus one per 16 bytes. The "
        "connection is closed."
    ),
    "Unauthorized": error_answer(
        "`unauthenticated`: no usable `Authorization` header where this endpoint needs a token.",
        **{
            "WWW-Authenticate": {
                "description": 'Always `Bearer realm="telemetryd"`.',
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    "Forbidden": error_answer(
        "`forbidden`: the token sent matches none of `[[auth.tokens]]` and JupyterHub does not "
        "accept it (`[auth.jupyterhub]`), or accepts it for an owner its settings refuse (a "
        "token sent is always checked, also where none is needed)."
    ),
    "NotFound": error_answer("`not_found`: nothing is served at this path."),
    "MethodNotAllowed": error_answer(
        "`method_not_allowed`: the path is served, but not for this method.",
        Allow={
            "description": "The methods the path takes, comma-separated.",
            "required": True,
            "schema": {"type": "string"},
        },
    ),
    "RequestTimeout": error_answer(
        "`request_timeout`: the request was left unfinished for `http_idle_timeout_secs`; "
        "`head_timeout`: the request line and headers were not whole within "
        "`http_head_timeout_secs`; `body_too_slow`: after that grace, the body arrived slower "
        "than `http_min_body_rate_bytes` per second; `evicted`: the head was not whole when a "
        "new connection needed room (`http_max_connections`). The connection is closed."
    ),
    "PayloadTooLarge": error_answer(
        "`body_too_large`: the body (its Content-Length, or as much of a chunked body as was "
        "read) is over `http_max_body_bytes`. The connection is closed."
    ),
    "UnsupportedMediaType": error_answer(
        "`unsupported_media_type`: the Content-Type is not one this endpoint takes (or a "
        "charset other than UTF-8). Nothing was read or accepted."
    ),
    "TooManyRequests": error_answer(
        "`too_many_requests`: the sink queues are full and `http_max_waiting_requests` "
        "requests already wait for room. None of the request's events was accepted.",
        **{"Retry-After": RETRY_AFTER},
    ),
    "HeadersTooLarge": error_answer(
        "`headers_too_large`: the request line and headers are over `http_max_header_bytes`. "
        "The connection is closed."
    ),
    "InternalError": error_answer(
        "`internal_error`: a bug in the daemon, which logged it. The daemon goes on serving."
    ),
    "ServiceUnavailable": error_answer(
        "`too_many_connections`: `http_max_connections` connections are already open, each "
        "busy with a request (an idle one would have been closed to make room); the "
        "connection is closed. `hub_unavailable`: the token had to be checked with JupyterHub "
        "(`[auth.jupyterhub]`), which could not be asked (unreachable, slower than "
        "`timeout_secs`, or an error). On ingest endpoints also `queue_full` (the sink queues "
        "stayed full for `http_enqueue_timeout_secs`), `disk_full` (a sink's disk buffer could "
        "not write them for as long: its disk is full or failing) and `stopping` (the daemon "
        "is shutting down): none of the request's events was accepted.",
        **{"Retry-After": RETRY_AFTER},
    ),
}

# When an operation needs a token, by its access (telemetryd.sources.http.operations).
_AUTH_NOTES: Final = {
    INGEST: "Needs a token when `[auth] required` is true.",
    HEALTH: "Needs a token when `[auth] protect_health` is true.",
    METRICS: "Needs a token when `[auth] protect_metrics` is true.",
    SUBSCRIBE: "Needs a token whenever `[[auth.tokens]]` or `[auth.jupyterhub]` are "
    "configured: records may hold personal data.",
    OPEN: "Needs no token.",
}


class _Writer:
    """Turns the route table into paths, collecting every body type on the way: their schemas
    come from one msgspec.json.schema_components call, which names each Struct once."""

    def __init__(self) -> None:
        self.types: list[Any] = []
        self.slots: list[Schema] = []  # filled in with each type's schema, in order

    def body(self, t: Any) -> Schema:
        slot: Schema = {}
        self.types.append(t)
        self.slots.append(slot)
        return slot

    def content(self, content: Content) -> Schema:
        schema = dict(content.schema) if content.schema is not None else self.body(content.type)
        media: Schema = {"schema": schema}
        if content.example is not None:
            media["example"] = content.example
        return media

    def answer(self, answer: Answer) -> Schema:
        response: Schema = {"description": answer.description}
        if answer.headers:
            response["headers"] = {name: dict(h) for name, h in answer.headers.items()}
        content = {kind: self.content(c) for kind, c in answer.content.items()}
        if len(answer.bodies) == 1:
            content[JSON] = {"schema": self.body(answer.bodies[0])}
        elif answer.bodies:
            content[JSON] = {"schema": {"anyOf": [self.body(t) for t in answer.bodies]}}
        if content:
            response["content"] = content
        return response

    def operation(self, op: Operation) -> Schema:
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
        if op.access != OPEN:
            common["401"] = _ref("responses", "Unauthorized")
        if op.media_types:  # an endpoint without a body ignores Content-Type
            common["415"] = _ref("responses", "UnsupportedMediaType")
        if op.ingest:  # full sink queues
            common["429"] = _ref("responses", "TooManyRequests")
        own = {str(status): self.answer(answer) for status, answer in op.answers.items()}
        operation: Schema = {
            "operationId": op.operation_id,
            "tags": [op.tag],
            "summary": op.summary,
            "description": f"{op.description}\n\n{_AUTH_NOTES[op.access]}",
        }
        if op.parameters:
            operation["parameters"] = [dict(p) for p in op.parameters]
        if op.request is not None:
            request: Schema = {"required": True}
            if op.request.description:
                request["description"] = op.request.description
            request["content"] = {kind: self.content(c) for kind, c in op.request.content.items()}
            operation["requestBody"] = request
        operation["responses"] = dict(sorted({**common, **own}.items()))
        return operation

    def components(self) -> Schema:
        """The schemas of every body met so far, each slot filled with its own (a $ref)."""
        self.body(Dropped)  # named by the stream's SubscriptionEvent
        schemas, components = msgspec.json.schema_components(
            self.types, ref_template="#/components/schemas/{name}"
        )
        for slot, schema in zip(self.slots, schemas, strict=True):
            slot.update(schema)
        for schema in components.values():
            # A docstring's line breaks are the source's, not the text's.
            if "description" in schema:
                schema["description"] = " ".join(schema["description"].split("\n"))
        for name, example in _EXAMPLES.items():
            components[name]["example"] = example
        return {**components, **_STREAM_SCHEMAS}


def document() -> dict[str, Any]:
    """The whole document, written anew: the caller may change it."""
    writer = _Writer()
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = writer.operation(op)
    responses = {name: writer.answer(answer) for name, answer in _RESPONSES.items()}
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
        "paths": paths,
        "components": {
            "schemas": writer.components(),
            "responses": responses,
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
