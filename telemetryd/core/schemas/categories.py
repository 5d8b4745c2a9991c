"""Privacy categories of a schema's properties, keyed by where the property sits in an event's data.

A location is a JSON pointer (RFC 6901) into the event's data, not into the schema: a property
`path` is `/path`, a property `source` of the objects inside the array `cells` is
`/cells/*/source`. The segment `*` stands for every item of an array whose `items` is one schema;
a tuple-style `items` (a list of schemas) gives each position its index instead (`/pair/0`).
Property names are escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`). Categories are read from
`properties` and `items` at any depth; subschemas reached only through `$ref`, `allOf`, `anyOf`,
`oneOf` or `if`/`then` are not followed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from telemetryd.core.schemas.model import json_pointer

ITEMS = "*"  # the data-pointer segment of "every item of this array"


def property_schemas(
    doc: dict[str, Any],
) -> Iterator[tuple[list[str | int], list[str | int], dict[str, Any]]]:
    """Every property and array-item subschema at any depth, in document order.

    Yields (path in the data, path in the schema document, the subschema); the paths are lists
    of segments for `json_pointer`.
    """
    yield from _children(doc, [], [])


def _children(
    node: dict[str, Any], data: list[str | int], where: list[str | int]
) -> Iterator[tuple[list[str | int], list[str | int], dict[str, Any]]]:
    props = node.get("properties")
    if isinstance(props, dict):
        for name, spec in props.items():
            yield from _node(spec, [*data, str(name)], [*where, "properties", str(name)])
    items = node.get("items")
    if isinstance(items, dict):
        yield from _node(items, [*data, ITEMS], [*where, "items"])
    elif isinstance(items, list):
        for i, spec in enumerate(items):
            yield from _node(spec, [*data, i], [*where, "items", i])


def _node(
    spec: Any, data: list[str | int], where: list[str | int]
) -> Iterator[tuple[list[str | int], list[str | int], dict[str, Any]]]:
    if isinstance(spec, dict):
        yield data, where, spec
        yield from _children(spec, data, where)


def category_map(doc: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Data pointer → the schema's own categories there, for every property that has some."""
    found: dict[str, tuple[str, ...]] = {}
    for data, _, spec in property_schemas(doc):
        categories = spec.get("categories")
        if isinstance(categories, list) and categories:
            found[json_pointer(data)] = tuple(dict.fromkeys(str(c) for c in categories))
    return found


def subschema_at(doc: dict[str, Any], pointer: str) -> dict[str, Any] | str:
    """The subschema describing the data at `pointer`, or why the schema has none there."""
    if not pointer.startswith("/"):
        return "must be a JSON pointer into the event's data, starting with /"
    node = doc
    walked = ""
    for raw in pointer.split("/")[1:]:
        segment = raw.replace("~1", "/").replace("~0", "~")
        props = node.get("properties")
        items = node.get("items")
        if isinstance(props, dict) and isinstance(props.get(segment), dict):
            node = props[segment]
        elif segment == ITEMS and isinstance(items, dict):
            node = items
        elif (
            isinstance(items, list)
            and segment.isascii()
            and segment.isdigit()
            and (segment == "0" or not segment.startswith("0"))  # RFC 6901: no leading zeros
            and int(segment) < len(items)
            and isinstance(items[int(segment)], dict)
        ):
            node = items[int(segment)]
        else:
            return f"the schema has no property {segment!r} under {walked or '/'}"
        walked += "/" + raw
    return node
