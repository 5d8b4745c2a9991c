"""Categories of a schema version: data pointer → categories, at any depth, `*` for array items."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.core.schemas.categories import category_map, subschema_at
from telemetryd.core.schemas.compilation import compile_schema
from telemetryd.core.schemas.model import CompiledSchema, json_pointer
from telemetryd.core.schemas.rules import check_schema

NESTED: dict[str, Any] = {
    "$id": "https://example.org/nested",
    "version": "1",
    "type": "object",
    "properties": {
        "path": {"type": "string", "categories": ["personal-data"]},
        "count": {"type": "integer"},
        "user": {
            "type": "object",
            "categories": ["user-identifier"],
            "properties": {"name": {"type": "string", "categories": ["user-identifier"]}},
        },
        "cells": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "source": {"type": "string", "categories": ["personal-data"]},
                    "index": {"type": "integer", "categories": ["unrestricted"]},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string", "categories": ["unrestricted"]}},
        "pair": {"type": "array", "items": [{"type": "string"}, {"categories": ["personal-data"]}]},
        "a/b~c": {"categories": ["unrestricted", "unrestricted"]},
    },
}


def test_the_map_reaches_every_depth_and_array_items() -> None:
    assert category_map(NESTED) == {
        "/path": ("personal-data",),
        "/user": ("user-identifier",),
        "/user/name": ("user-identifier",),
        "/cells/*/source": ("personal-data",),
        "/cells/*/index": ("unrestricted",),
        "/tags/*": ("unrestricted",),
        "/pair/1": ("personal-data",),
        "/a~1b~0c": ("unrestricted",),
    }


def test_the_compiled_schema_carries_the_map() -> None:
    compiled = compile_schema(NESTED, "nested.json", allowed=True)
    assert isinstance(compiled, CompiledSchema)
    assert compiled.categories == category_map(NESTED)
    assert compiled.overlay_categories == {}


def test_subschema_at_resolves_properties_items_and_escapes() -> None:
    assert subschema_at(NESTED, "/cells/*/source") == {
        "type": "string",
        "categories": ["personal-data"],
    }
    assert subschema_at(NESTED, "/pair/1") == {"categories": ["personal-data"]}
    assert subschema_at(NESTED, "/a~1b~0c") == {"categories": ["unrestricted", "unrestricted"]}
    assert subschema_at(NESTED, "/cells/*/nope") == (
        "the schema has no property 'nope' under /cells/*"
    )
    assert subschema_at(NESTED, "/cells/0") == "the schema has no property '0' under /cells"
    assert subschema_at(NESTED, "/pair/01") == "the schema has no property '01' under /pair"
    assert subschema_at(NESTED, "path") == (
        "must be a JSON pointer into the event's data, starting with /"
    )


def test_malformed_categories_under_array_items_are_rejected() -> None:
    doc = {**NESTED, "properties": {"xs": {"type": "array", "items": {"categories": "pii"}}}}
    problems = check_schema(doc, "s.json")
    assert [(p.pointer, p.reason) for p in problems] == [
        ("/properties/xs/items/categories", "must be a list of category names")
    ]


_NAMES = st.text(st.characters(codec="ascii", exclude_characters="*"), min_size=1, max_size=6)
_CATEGORIES = st.lists(st.sampled_from(["unrestricted", "personal-data", "user-identifier"]))


def _subschemas(depth: int) -> st.SearchStrategy[tuple[dict[str, Any], dict[str, tuple[str, ...]]]]:
    """A subschema and the categories it should yield, relative to where it sits."""
    leaf = _CATEGORIES.map(_leaf)
    if depth == 0:
        return leaf
    inner = _subschemas(depth - 1)
    objects = st.tuples(st.dictionaries(_NAMES, inner, max_size=3), _CATEGORIES).map(_object)
    arrays = st.tuples(inner, _CATEGORIES).map(_array)
    return leaf | objects | arrays


def _own(categories: list[str]) -> dict[str, tuple[str, ...]]:
    return {"": tuple(dict.fromkeys(categories))} if categories else {}


def _with(spec: dict[str, Any], categories: list[str]) -> dict[str, Any]:
    return {**spec, "categories": categories} if categories else spec


def _leaf(categories: list[str]) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    return _with({"type": "string"}, categories), _own(categories)


def _object(
    args: tuple[dict[str, tuple[dict[str, Any], dict[str, tuple[str, ...]]]], list[str]],
) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    children, categories = args
    expected = _own(categories)
    for name, (_, below) in children.items():
        expected |= {json_pointer([name]) + rest: c for rest, c in below.items()}
    spec = {"type": "object", "properties": {n: s for n, (s, _) in children.items()}}
    return _with(spec, categories), expected


def _array(
    args: tuple[tuple[dict[str, Any], dict[str, tuple[str, ...]]], list[str]],
) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    (item, below), categories = args
    expected = _own(categories) | {"/*" + rest: c for rest, c in below.items()}
    return _with({"type": "array", "items": item}, categories), expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_NAMES, _subschemas(3), max_size=4))
def test_the_map_lists_exactly_the_categorised_pointers(
    properties: dict[str, tuple[dict[str, Any], dict[str, tuple[str, ...]]]],
) -> None:
    doc = {"type": "object", "properties": {n: s for n, (s, _) in properties.items()}}
    expected: dict[str, tuple[str, ...]] = {}
    for name, (_, below) in properties.items():
        expected |= {json_pointer([name]) + rest: c for rest, c in below.items()}
    assert category_map(doc) == expected
    for pointer in expected:
        assert isinstance(subschema_at(doc, pointer), dict)
