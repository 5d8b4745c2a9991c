"""What the HTTP transport and the HTTP API hand each other: a request in, a response out.

The transport (telemetryd.sources.http.server and .connection) builds a Request from what it
read and calls the Route's handler that the API chose from the head; the API answers with a
Response (or an error_response). Both sides import this module; neither imports the other's
(the transport knows the API only as the App it is given).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from telemetryd.auth import Identity
from telemetryd.delivery.subscribers import Subscription
from telemetryd.sources.http.bodies import Error

JSON: Final = "application/json"

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Stream:
    """What a subscription's response goes on with after its head (telemetryd.sources)."""

    subscription: Subscription
    websocket_key: str | None  # the handshake's Sec-WebSocket-Key; None: Server-Sent Events


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    stream: Stream | None = None  # the transport closes its subscription when done


def json_response(
    status: int, body: msgspec.Struct, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """A body of telemetryd.sources.http.bodies, as JSON."""
    return Response(status, _encode(body), (("content-type", JSON), *headers))


def error_response(
    status: int, reason: str | None, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The common error body, `{"message": ..., "reason": ...}` (bodies.Error); those with more
    keys are their own Structs, sent with json_response."""
    return json_response(status, Error(message, reason), headers)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # as received, without the query
    media_type: str  # lower case, without parameters; "" when the endpoint takes no body
    body: bytes
    origin: bytes  # `__origin__`, with the token's identity as `user` when one was sent
    identity: Identity | None = None  # the verified token's, None for an anonymous request
    query: str = ""  # the target after "?", undecoded
    headers: Sequence[tuple[bytes, bytes]] = ()  # names in lower case


Handler = Callable[[Request, str], Awaitable[Response]]  # (request, path parameter)


#: What guards an endpoint: `[auth] required` (ingest), protect_health, protect_metrics, or
#: nothing (open: a token sent is still checked).
INGEST: Final = "ingest"
HEALTH: Final = "health"
METRICS: Final = "metrics"
#: Reading records (they may hold personal data): a token whenever tokens are configured.
SUBSCRIBE: Final = "subscribe"
OPEN: Final = "open"


@dataclass(frozen=True, slots=True)
class Route:
    """An endpoint chosen from the request head, before the body is read."""

    handler: Handler
    param: str  # the URL-decoded rest of a prefixed path, such as a schema id
    media_type: str
    access: str = INGEST
