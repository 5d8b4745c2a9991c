"""Records and compiled schemas for the privacy tests, built as the daemon builds them."""

from __future__ import annotations

from typing import Any

import msgspec

from telemetryd.core.record import Record
from telemetryd.core.schemas.compilation import compile_schema
from telemetryd.core.schemas.model import CompiledSchema

ORIGIN: dict[str, Any] = {
    "transport": "unix",
    "user": "alice",
    "uid": 1000,
    "gid": 1000,
    "pid": 4242,
}
TIMESTAMP = "2026-12-08T01:02:03.456789Z"


def compiled(doc: dict[str, Any]) -> CompiledSchema:
    schema = compile_schema(doc, "test.json", allowed=True)
    assert isinstance(schema, CompiledSchema), schema
    return schema


def members(
    schema: CompiledSchema, data: dict[str, Any], origin: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The record's members, in the order the daemon writes them."""
    return {
        "__timestamp__": TIMESTAMP,
        "__schema__": schema.schema_id,
        "__schema_version__": schema.version,
        "__metadata_version__": 1,
        "__origin__": ORIGIN if origin is None else origin,
        **data,
    }


def record(
    schema: CompiledSchema, data: dict[str, Any], origin: dict[str, Any] | None = None
) -> Record:
    payload = msgspec.json.encode(members(schema, data, origin))
    return Record(schema.schema_id, schema.version, payload, 12.5)
