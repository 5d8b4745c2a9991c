"""How a record is named on NATS: its subject and its `Nats-Msg-Id`.

The subject is `<subject_prefix>.<host>.<path segments...>.<version>`, each part a token of
`[A-Za-z0-9_-]`: every other character (the host's dots, `:`, `*`, `>`, spaces, ...) becomes
`_`, runs of them one `_`, and empty path segments are skipped. For example
`https://events.jupyter.org/jupyter_server/contents_service/v1` version `1` is published on
`telemetryd.events_jupyter_org.jupyter_server.contents_service.v1.1`.

The mapping is for routing and subscribing (`telemetryd.events_jupyter_org.>`), not for
identifying a schema: two ids that differ only in replaced characters share a subject, and
the record itself always carries `__schema__` and `__schema_version__`.

The message id is a hash of the record's bytes, so a batch retried after a failover carries
the same ids and JetStream's duplicate window stores each record once. Two records with the
same bytes (same timestamp, origin and data) within the window are stored once: by
construction they are the same event sent twice.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

#: One token of a subject as this sink writes them.
TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")

MSG_ID_HEADER = "Nats-Msg-Id"


def token(text: str) -> str:
    """`text` as one subject token: every run of other characters becomes one `_`."""
    return _NOT_TOKEN.sub("_", text) or "_"


def is_subject(text: str) -> bool:
    """Whether `text` is dot-separated tokens of [A-Za-z0-9_-] (no wildcard, no empty token)."""
    return all(TOKEN.fullmatch(part) for part in text.split("."))


def subject_for(prefix: str, schema_id: str, version: str) -> str:
    """The subject records of (schema_id, version) are published on."""
    parts = urlsplit(schema_id)
    pieces = [parts.netloc, *parts.path.split("/"), parts.query, parts.fragment]
    if not parts.netloc and not parts.path:  # an id that is only a scheme, or empty
        pieces = [schema_id]
    tokens = [token(piece) for piece in pieces if piece]
    return ".".join([prefix, *tokens, token(version)])


def msg_id(payload: bytes) -> str:
    """The `Nats-Msg-Id` of a record: 128 bits of BLAKE2b of its bytes, in hex."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()
