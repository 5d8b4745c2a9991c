"""The hot path: bad input gets its reason; good input becomes the record of docs/events.md."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.core import rejections as R
from telemetryd.core.framing import LineTooLong
from telemetryd.core.ingest import Ingestor
from telemetryd.core.reasons import Reason
from telemetryd.core.rejections import dead_letter_record
from telemetryd.core.schemas.registry import SchemaRegistry

CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
ORIGIN = b'{"transport":"unix","user":"alice","uid":1000}'
NOW = "2026-11-22T01:30:21.131970Z"


REGISTRY = SchemaRegistry.load()


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor(REGISTRY)


def line(data: Any, schema_id: str = CONTENTS, version: Any = "1", **extra: Any) -> bytes:
    return json.dumps({"schema_id": schema_id, "version": version, "data": data, **extra}).encode()


def test_a_valid_event_becomes_the_documented_record(ingestor: Ingestor) -> None:
    records, rejected = ingestor.process(
        [line({"action": "save", "path": "a.ipynb"})], ORIGIN, NOW, 1.0
    )
    assert rejected == []
    assert json.loads(records[0].payload) == {
        "__timestamp__": NOW,
        "__schema__": CONTENTS,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        "__origin__": {"transport": "unix", "user": "alice", "uid": 1000},
        "action": "save",
        "path": "a.ipynb",
    }
    assert records[0].schema_id == CONTENTS
    assert b"\n" not in records[0].payload


def test_the_record_holds_exactly_the_data_that_was_validated(ingestor: Ingestor) -> None:
    # a duplicated key: the validator sees the last value, and so does every reader of the record
    raw = (
        b'{"schema_id":"%s","version":"1",'
        b'"data":{ "path" : "caf\\u00e9.ipynb", "action":"explode", "action":"save" }}'
    )
    records, rejected = ingestor.process([raw % CONTENTS.encode()], ORIGIN, NOW, 1.0)
    assert rejected == []
    assert records[0].payload.endswith(b',"path":"caf\xc3\xa9.ipynb","action":"save"}')
    assert records[0].payload.count(b'"action"') == 1
    assert json.loads(records[0].payload)["path"] == "café.ipynb"


def test_integer_version_is_normalised_and_timestamp_kept(ingestor: Ingestor) -> None:
    event = line({"action": "get", "path": "x"}, version=1, timestamp="2026-01-02T03:04:05+01:00")
    records, _rejected = ingestor.process([event], ORIGIN, NOW, 1.0)
    record = json.loads(records[0].payload)
    assert record["__schema_version__"] == "1"
    assert record["__timestamp__"] == "2026-01-02T02:04:05.000000Z"


@pytest.mark.parametrize(
    ("raw", "reason", "words"),
    [
        (b"", Reason.EMPTY_LINE, "empty line"),
        (b"  \r", Reason.EMPTY_LINE, "empty line"),
        (b'{"schema_id": ', Reason.INVALID_JSON, "malformed JSON"),
        (b"\xff\xfe{}", Reason.INVALID_UTF8, "UTF-8"),
        (b'{"schema_id":"x\xc3","version":"1","data":{}}', Reason.INVALID_UTF8, "UTF-8"),
        (b'{"version":"1","data":{}}', Reason.INVALID_ENVELOPE, "schema_id"),
        (b'{"schema_id":"%s","version":"1"}' % CONTENTS.encode(), Reason.INVALID_ENVELOPE, "data"),
        (
            b'{"schema_id":"%s","version":1.5,"data":{}}' % CONTENTS.encode(),
            Reason.INVALID_ENVELOPE,
            "version",
        ),
        (b"[1,2]", Reason.INVALID_ENVELOPE, "object"),
        (
            line([1], CONTENTS),
            Reason.INVALID_ENVELOPE,
            "Expected `object`, got `array` - at `$.data`",
        ),
        (
            line({"action": "save", "path": "X"}, CONTENTS).replace(b"X", b"\xff"),
            Reason.INVALID_UTF8,
            "UTF-8",
        ),
        (
            b'{"schema_id":"%s","version":"1","data":{"n":1e999}}' % CONTENTS.encode(),
            Reason.INVALID_ENVELOPE,
            "out of range",
        ),
        (line({}, "https://example.org/nope"), Reason.UNKNOWN_SCHEMA, "not registered"),
        (line({}, CONTENTS, "7"), Reason.UNKNOWN_VERSION, "registered versions: 1"),
        (line({"action": "explode", "path": "a"}), Reason.INVALID_DATA, "action"),
        (line({"path": "a"}), Reason.INVALID_DATA, "action"),
        (
            line({"action": "save", "path": "a", "__origin__": {"user": "root"}}),
            Reason.RESERVED_FIELD,
            "__origin__",
        ),
        (
            line({"action": "save", "path": "a"}, timestamp="yesterday"),
            Reason.INVALID_TIMESTAMP,
            "yesterday",
        ),
        (
            line({"action": "save", "path": "a"}, timestamp="2026-01-02T03:04:05"),
            Reason.INVALID_TIMESTAMP,
            "no UTC offset",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_reason_that_names_the_problem(
    ingestor: Ingestor, raw: bytes, reason: str, words: str
) -> None:
    good = line({"action": "save", "path": "ok"})
    records, rejected = ingestor.process([good, raw, good], ORIGIN, NOW, 1.0, first_line=5)
    assert len(records) == 2  # the neighbours of a bad line are never lost
    assert [r.reason for r in rejected] == [reason]
    assert words in rejected[0].message
    assert rejected[0].line == 6
    assert rejected[0].raw == raw


def test_line_too_long_is_rejected_with_the_limit(ingestor: Ingestor) -> None:
    _, rejected = ingestor.process([LineTooLong(5000, b"{...", 4096)], ORIGIN, NOW, 1.0)
    assert rejected[0].reason == Reason.LINE_TOO_LONG
    assert "5000 bytes" in rejected[0].message
    assert "4096" in rejected[0].message
    assert rejected[0].raw_bytes == 5000


def test_schema_not_allowed() -> None:
    ingestor = Ingestor(SchemaRegistry.load(allowed=["https://schema.jupyter.org/*"]))
    _, rejected = ingestor.process([line({"action": "save", "path": "a"})], ORIGIN, NOW, 1.0)
    assert rejected[0].reason == Reason.SCHEMA_NOT_ALLOWED


def test_dead_letter_record_keeps_the_input_and_reason(ingestor: Ingestor) -> None:
    _, rejected = ingestor.process([b"\xff not utf8", b"{bad"], ORIGIN, NOW, 1.0)
    binary = json.loads(dead_letter_record(rejected[0], ORIGIN, NOW, 1.0).payload)
    text = json.loads(dead_letter_record(rejected[1], ORIGIN, NOW, 1.0).payload)
    assert binary["__schema__"] == R.REJECTED_EVENT_SCHEMA
    assert binary["reason"] == Reason.INVALID_UTF8
    assert binary["raw_encoding"] == "base64"
    assert text == {
        "__timestamp__": NOW,
        "__schema__": R.REJECTED_EVENT_SCHEMA,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        "__origin__": {"transport": "unix", "user": "alice", "uid": 1000},
        "reason": Reason.INVALID_JSON,
        "message": rejected[1].message,
        "raw": "{bad",
        "raw_encoding": "utf-8",
        "raw_bytes": 4,
        "raw_truncated": False,
        "line": 2,
    }


def test_dead_letter_records_validate_against_their_own_schema(ingestor: Ingestor) -> None:
    schema = ingestor.registry.get(R.REJECTED_EVENT_SCHEMA, R.REJECTED_EVENT_VERSION)
    assert schema is not None
    _, rejected = ingestor.process([b"", b"\xff", line({}, CONTENTS, "9")], ORIGIN, NOW, 1.0)
    for rejection in rejected:
        record = json.loads(dead_letter_record(rejection, ORIGIN, NOW, 1.0).payload)
        schema.validate({k: v for k, v in record.items() if not k.startswith("__")})


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), max_size=10))
def test_fuzz_arbitrary_bytes_never_raise_and_every_line_is_accounted_for(
    lines: list[bytes],
) -> None:
    records, rejected = Ingestor(REGISTRY).process(lines, ORIGIN, NOW, 1.0)
    assert len(records) + len(rejected) == len(lines)
    for record in records:
        json.loads(record.payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    data=json_values,
    version=st.one_of(st.just("1"), st.integers(), st.text(max_size=3)),
    timestamp=st.one_of(st.none(), st.text(max_size=30)),
)
def test_fuzz_structured_events_either_make_valid_json_records_or_a_rejection(
    data: Any, version: Any, timestamp: str | None
) -> None:
    ingestor = Ingestor(REGISTRY)
    event: dict[str, Any] = {"schema_id": CONTENTS, "version": version, "data": data}
    if timestamp is not None:
        event["timestamp"] = timestamp
    records, rejected = ingestor.process([json.dumps(event).encode()], ORIGIN, NOW, 1.0)
    assert len(records) + len(rejected) == 1
    if records:
        record = json.loads(records[0].payload)
        assert record["__schema__"] == CONTENTS
        assert {k: v for k, v in record.items() if not k.startswith("__")} == data


def test_deeply_nested_json_is_rejected_and_the_lines_around_it_kept(ingestor: Ingestor) -> None:
    """msgspec raises RecursionError, not DecodeError, past ~1000 levels."""
    deep = b'{"schema_id":"x","version":"1","data":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    good = line({"action": "save", "path": "deep/ok.ipynb"})
    records, rejected = ingestor.process([good, deep, good], ORIGIN, NOW, 0.0, 1)
    assert len(records) == 2
    assert [(r.reason, r.line) for r in rejected] == [("invalid_json", 2)]
    assert "nested too deeply" in rejected[0].message


@given(
    extra=st.dictionaries(
        st.one_of(
            st.sampled_from(["source_path", "action", "_x", "__x", "a__b", "__origin__"]),
            st.text(max_size=6),
        ),
        st.text(max_size=4),  # a string: what the schema declares for each of its properties
        max_size=4,
    )
)
@settings(max_examples=200)
def test_data_is_refused_exactly_when_a_key_starts_with_two_underscores(
    extra: dict[str, str],
) -> None:
    # The hot path skips looking at the keys when all are declared properties; that shortcut
    # must never let a reserved key through, nor refuse undeclared keys the schema allows.
    data: dict[str, Any] = {"action": "save", "path": "a", **extra}
    data["action"] = "save"
    records, rejected = Ingestor(REGISTRY).process([line(data)], ORIGIN, NOW, 1.0)
    if any(key.startswith("__") for key in data):
        assert [r.reason for r in rejected] == [Reason.RESERVED_FIELD]
        assert records == []
    else:
        assert rejected == []
        assert len(records) == 1
