"""The Unix socket protocol's control lines (docs/socket-protocol.md): hello, acknowledgements,
rejections.

Plain mode is bare NDJSON, one event a line, so `socat` and `nc -U` work. A client that must
not lose events opens with a hello line and gets the acknowledged mode:

    client → {"hello": "telemetryd", "protocol": 1}
    daemon → {"hello": "telemetryd", "protocol": 1, "server": "telemetryd/0.1.0",
              "max_line_bytes": N}
    client → event lines, numbered 1, 2, 3, ... in the order sent (every line counts)
    daemon → {"rejected": 2, "reason": "invalid_data", "message": "..."}  (for each refused line)
    daemon → {"ack": 3}   cumulative: lines 1..3 are settled (accepted, or rejected as above)

An acknowledged line is validated and in the queue of every sink that wants it. In plain mode
the daemon also writes rejection lines, numbered from the connection's first line, but drops
them (counted) if the client does not read them.

This module depends on msgspec only: the client library imports it.
"""

from __future__ import annotations

from typing import Any

import msgspec

PROTOCOL_VERSION = 1
HELLO_KEY = "hello"
HELLO_VALUE = "telemetryd"


class Hello(msgspec.Struct, omit_defaults=True):
    hello: str
    protocol: int  # no default: omit_defaults would leave it out of the line
    server: str | None = None
    max_line_bytes: int | None = None


class Ack(msgspec.Struct):
    ack: int


class Rejected(msgspec.Struct):
    rejected: int
    reason: str
    message: str


class Error(msgspec.Struct):
    error: str
    message: str


_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(dict[str, Any])


def encode_line(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message) + b"\n"


def client_hello() -> bytes:
    return encode_line(Hello(HELLO_VALUE, PROTOCOL_VERSION))


def is_hello(line: bytes) -> bool:
    """Whether a connection's first line is a hello (and not an event)."""
    if b'"hello"' not in line:
        return False
    try:
        message = _reply_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return False
    return message.get(HELLO_KEY) == HELLO_VALUE and "schema_id" not in message


def decode_reply(line: bytes) -> dict[str, Any]:
    return _reply_decoder.decode(line)
