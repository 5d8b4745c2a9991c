"""A policy's plan applied to records: exact expected records across categories, actions,
nesting, arrays, origin_user, allowed_properties and uncategorised."""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from telemetryd.core.record import Record
from telemetryd.core.schemas.model import CompiledSchema
from telemetryd.privacy.plan import compile_plan
from telemetryd.privacy.pseudonym import Pseudonymizer
from telemetryd.privacy.rules import PrivacyRules
from telemetryd.privacy.settings import PrivacySettings
from tests.support.privacy_records import ORIGIN, compiled, members, record

KEY = b"0123456789abcdef0123456789abcdef"


def pseudonym(value: Any) -> str:
    data = value.encode() if isinstance(value, str) else msgspec.json.encode(value, order="sorted")
    return "hmac-sha256:" + hmac.new(KEY, data, hashlib.sha256).hexdigest()


SCHEMA = compiled(
    {
        "$id": "https://example.org/matrix",
        "version": "1",
        "type": "object",
        "properties": {
            "path": {"type": "string", "categories": ["personal-data"]},
            "action": {"type": "string", "categories": ["unrestricted"]},
            "count": {"type": "integer"},
            "user": {
                "type": "object",
                "categories": ["unrestricted"],
                "properties": {
                    "name": {"type": "string", "categories": ["user-identifier"]},
                    "id": {"type": "integer"},
                },
            },
            "cells": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "source": {"type": ["string", "null"], "categories": ["personal-data"]},
                        "index": {"type": "integer", "categories": ["unrestricted"]},
                        "meta": {"type": "string"},
                    },
                },
            },
            "tags": {"type": "array", "items": {"type": "string", "categories": ["personal-data"]}},
            "pair": {
                "type": "array",
                "items": [{"type": "string"}, {"categories": ["personal-data"]}],
            },
            "info": {
                "type": "object",
                "properties": {
                    "secret": {"type": "string", "categories": ["personal-data"]},
                    "note": {"type": "string"},
                },
            },
        },
    }
)

DATA: dict[str, Any] = {
    "path": "/home/alice/x.ipynb",
    "action": "save",
    "count": 3,
    "user": {"name": "alice", "id": 7},
    "cells": [
        {"source": "print(1)", "index": 0, "meta": "m0"},
        {"source": None, "index": 1, "meta": "m1"},
    ],
    "tags": ["t1", "t2"],
    "pair": ["first", "second"],
    "info": {"secret": "s", "note": "n"},
    "extra": "x",  # not declared: the schema is open
}


def _apply(settings: PrivacySettings, schema: CompiledSchema, rec: Record) -> Record:
    plan = compile_plan(schema.categories, PrivacyRules.of(settings), Pseudonymizer(KEY))
    assert plan is not None
    return plan.apply(rec)


def _expected(
    edit: Callable[[dict[str, Any]], None],
    redacted: list[str],
    origin: dict[str, Any] | None = None,
) -> bytes:
    data = copy.deepcopy(DATA)
    edit(data)
    head = members(SCHEMA, {}, origin)
    return msgspec.json.encode({**head, "__redacted__": redacted, **data})


def _set(pointer_values: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """An edit setting (or, for the value DROP, removing) values at concrete pointers."""

    def edit(data: dict[str, Any]) -> None:
        for pointer, value in pointer_values.items():
            *parents, last = pointer.split("/")[1:]
            node: Any = data
            for segment in parents:
                node = node[int(segment)] if isinstance(node, list) else node[segment]
            if value is DROP:
                del node[last]
            elif isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value

    return edit


DROP = object()
PERSONAL = ["/cells/0/source", "/info/secret", "/pair/1", "/path", "/tags/0", "/tags/1"]
ALL_HIDDEN = sorted([*PERSONAL, "/user/name"])
UNCATEGORISED = ["/count", "/extra", "/pair/0", "/info/note"]

CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    (
        "default: redact what is not unrestricted",
        {},
        dict.fromkeys(ALL_HIDDEN),
        ALL_HIDDEN,
    ),
    (
        "drop removes keys, nulls array items, and lists a dropped null",
        {"action": "drop"},
        {
            "/path": DROP,
            "/user/name": DROP,
            "/cells/0/source": DROP,
            "/cells/1/source": DROP,
            "/tags/0": None,
            "/tags/1": None,
            "/pair/1": None,
            "/info/secret": DROP,
        },
        sorted([*ALL_HIDDEN, "/cells/1/source"]),
    ),
    (
        "pseudonymize: every hidden value by its pseudonym, a null stays null",
        {"action": "pseudonymize"},
        {
            "/path": pseudonym("/home/alice/x.ipynb"),
            "/user/name": pseudonym("alice"),
            "/cells/0/source": pseudonym("print(1)"),
            "/tags/0": pseudonym("t1"),
            "/tags/1": pseudonym("t2"),
            "/pair/1": pseudonym("second"),
            "/info/secret": pseudonym("s"),
        },
        ALL_HIDDEN,
    ),
    (
        "a per-category action",
        {"actions": {"user-identifier": "pseudonymize", "personal-data": "drop"}},
        {
            "/path": DROP,
            "/user/name": pseudonym("alice"),
            "/cells/0/source": DROP,
            "/cells/1/source": DROP,
            "/tags/0": None,
            "/tags/1": None,
            "/pair/1": None,
            "/info/secret": DROP,
        },
        sorted([*ALL_HIDDEN, "/cells/1/source"]),
    ),
    (
        "an allowed category is kept",
        {"allowed_categories": ["unrestricted", "personal-data"]},
        {"/user/name": None},
        ["/user/name"],
    ),
    (
        "allowed properties are kept whatever their category",
        {"allowed_properties": ["/path", "/cells/*/source", "/pair/1"]},
        {"/user/name": None, "/tags/0": None, "/tags/1": None, "/info/secret": None},
        ["/info/secret", "/tags/0", "/tags/1", "/user/name"],
    ),
    (
        "uncategorised redact: the outermost values no category covers",
        {"uncategorised": "redact", "allowed_properties": ["/cells/*/meta"]},
        {
            **dict.fromkeys(ALL_HIDDEN),
            "/count": None,
            "/extra": None,
            "/pair/0": None,
            "/info/note": None,
        },
        sorted([*ALL_HIDDEN, *UNCATEGORISED]),
    ),
    (
        "uncategorised drop: keys removed, array items nulled; /user/id is covered by /user",
        {"uncategorised": "drop"},
        {
            **dict.fromkeys(ALL_HIDDEN),
            "/count": DROP,
            "/extra": DROP,
            "/pair/0": None,
            "/info/note": DROP,
            "/cells/0/meta": DROP,
            "/cells/1/meta": DROP,
        },
        sorted([*ALL_HIDDEN, *UNCATEGORISED, "/cells/0/meta", "/cells/1/meta"]),
    ),
]


@pytest.mark.parametrize(
    ("settings", "edits", "redacted"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_policy_matrix(
    settings: dict[str, Any],
    edits: dict[str, Any],
    redacted: list[str],
) -> None:
    source = record(SCHEMA, DATA)
    out = _apply(PrivacySettings.model_validate(settings), SCHEMA, source)
    assert out.payload == _expected(_set(edits), redacted)
    assert (out.schema_id, out.version, out.received) == (
        source.schema_id,
        source.version,
        source.received,
    )


@pytest.mark.parametrize(
    ("origin_user", "origin"),
    [
        (
            "pseudonymize",
            {
                **ORIGIN,
                "user": pseudonym("alice"),
                "uid": pseudonym(1000),
                "pid": pseudonym(4242),
            },
        ),
        ("drop", {"transport": "unix", "gid": 1000}),
    ],
)
def test_origin_user(origin_user: str, origin: dict[str, Any]) -> None:
    settings = PrivacySettings.model_validate(
        {"allowed_categories": ["unrestricted", "personal-data", "user-identifier"]}
        | {"origin_user": origin_user}
    )
    out = _apply(settings, SCHEMA, record(SCHEMA, DATA))
    assert out.payload == _expected(
        _set({}), ["/__origin__/pid", "/__origin__/uid", "/__origin__/user"], origin
    )
    assert pseudonym(1000) == pseudonym("1000")  # canonical JSON of 1000 is its digits


def test_an_http_origin_without_uid_or_pid() -> None:
    settings = PrivacySettings(allowed_categories=["unrestricted"], origin_user="drop")
    schema = compiled({"$id": "https://example.org/flat", "version": "1", "type": "object"})
    out = _apply(settings, schema, record(schema, {"a": 1}, {"transport": "http", "user": "bob"}))
    expected = members(schema, {}, {"transport": "http"})
    assert msgspec.json.decode(out.payload) == {
        **expected,
        "__redacted__": ["/__origin__/user"],
        "a": 1,
    }


NESTED = compiled(
    {
        "$id": "https://example.org/nesting",
        "version": "1",
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "categories": ["personal-data"],
                "properties": {"name": {"type": "string", "categories": ["unrestricted"]}},
            },
            "a~b/c": {"type": "string", "categories": ["user-identifier"]},
        },
    }
)


def test_an_acting_property_takes_what_it_holds_with_it() -> None:
    settings = PrivacySettings(action="pseudonymize")
    data = {"user": {"name": "alice", "home": "/home/alice"}, "a~b/c": "x"}
    out = _apply(settings, NESTED, record(NESTED, data))
    assert msgspec.json.decode(out.payload) == {
        **members(NESTED, {}),
        "__redacted__": ["/a~0b~1c", "/user"],  # RFC 6901 escapes
        "user": pseudonym({"home": "/home/alice", "name": "alice"}),
        "a~b/c": pseudonym("x"),
    }


def test_untouched_members_keep_their_bytes() -> None:
    # A member the plan does not touch is copied as it was encoded, floats and all.
    payload = (
        b'{"__timestamp__":"t","__schema__":"https://example.org/nesting","__schema_version__":'
        b'"1","__metadata_version__":1,"__origin__":{"transport":"unix"},"ratio":1.50e3,'
        b'"a~b/c":"x"}'
    )
    out = _apply(PrivacySettings(), NESTED, Record(NESTED.schema_id, "1", payload, 0.0))
    assert out.payload == (
        b'{"__timestamp__":"t","__schema__":"https://example.org/nesting","__schema_version__":'
        b'"1","__metadata_version__":1,"__origin__":{"transport":"unix"},"__redacted__":'
        b'["/a~0b~1c"],"ratio":1.50e3,"a~b/c":null}'
    )


def test_nothing_to_do_compiles_to_no_plan() -> None:
    everything = PrivacySettings(
        allowed_categories=["unrestricted", "personal-data", "user-identifier"]
    )
    assert compile_plan(SCHEMA.categories, PrivacyRules.of(everything), None) is None
    # Only allowed categories, but the origin's user is acted on: a plan.
    with_origin = everything.model_copy(update={"origin_user": "drop"})
    assert compile_plan(SCHEMA.categories, PrivacyRules.of(with_origin), None) is not None


def test_a_record_with_nothing_to_hide_is_the_same_object() -> None:
    plan = compile_plan(SCHEMA.categories, PrivacyRules.of(PrivacySettings()), None)
    assert plan is not None
    quiet = record(SCHEMA, {"action": "save", "path": None, "tags": []})
    assert plan.apply(quiet) is quiet


def test_pseudonymizing_rules_need_a_key() -> None:
    with pytest.raises(ValueError, match="no pseudonym key"):
        compile_plan(
            SCHEMA.categories, PrivacyRules.of(PrivacySettings(action="pseudonymize")), None
        )


def test_a_value_under_a_covered_property_is_not_uncategorised() -> None:
    # /a/b has no categories, but /a covers it: the sweep of uncategorised values stops at /a.
    schema = compiled(
        {
            "$id": "https://example.org/covered",
            "version": "1",
            "type": "object",
            "properties": {
                "a": {
                    "type": "object",
                    "categories": ["unrestricted"],
                    "properties": {
                        "b": {
                            "type": "object",
                            "properties": {"c": {"categories": ["unrestricted"]}, "d": {}},
                        }
                    },
                }
            },
        }
    )
    plan = compile_plan(
        schema.categories, PrivacyRules.of(PrivacySettings(uncategorised="drop")), None
    )
    assert plan is not None
    kept = record(schema, {"a": {"b": {"c": 1, "d": 2}}})
    assert plan.apply(kept) is kept
