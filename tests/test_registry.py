"""The schema registry: the rules of docs/schemas.md, several versions per id, the shipped
schemas."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from telemetryd.core import record
from telemetryd.core.schemas.loading import builtin_schema_dir, load_documents
from telemetryd.core.schemas.model import (
    CompiledSchema,
    SchemaLoadError,
    SchemaProblem,
    version_key,
)
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.schemas.rules import check_schema

FIXTURES = Path(__file__).parent / "fixtures" / "schemas"
GOOD = FIXTURES / "good"
BAD = FIXTURES / "bad"
MULTI = "https://example.org/events/multi"
CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
OWN_PREFIX = "https://events.telemetryd.org/"


def problems_of(*paths: Path, builtin: bool = False) -> list[SchemaProblem]:
    with pytest.raises(SchemaLoadError) as caught:
        SchemaRegistry.load(paths, builtin=builtin)
    return caught.value.problems


def write_schema(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def simple_doc(schema_id: str = "urn:test:simple", **extra: Any) -> dict[str, Any]:
    return {"$id": schema_id, "version": "1", "type": "object", **extra}


# --- one bad file per rule ----------------------------------------------------------------------

BAD_CASES = [
    ("not_object.yaml", "", "must be a JSON object"),
    ("not_draft7.yaml", "/required", "not a valid Draft 7 schema"),
    ("id_missing.yaml", "/$id", "missing"),
    ("id_relative.yaml", "/$id", "not an absolute URI"),
    ("version_missing.yaml", "/version", "missing"),
    ("version_float.yaml", "/version", "got float 1.0"),
    ("version_bool.yaml", "/version", "got bool True"),
    ("version_null.json", "/version", "got null"),
    ("type_not_object.yaml", "/type", 'must be "object"'),
    ("reserved_property.yaml", "/properties/__secret", "reserved for record metadata"),
    ("personal_data_not_bool.yaml", "/personal-data", "true or false"),
    ("categories_not_list.yaml", "/properties/user/categories", "must be a list"),
    ("categories_empty_name.yaml", "/properties/user/categories/1", "non-empty string"),
    ("own_without_title.yaml", "/title", "need a non-empty title"),
    ("own_without_description.yaml", "/description", "need a non-empty description"),
    ("remote_ref.yaml", "/properties/user/$ref", "is not fetched; inline the definition"),
    ("unresolvable_ref.yaml", "/properties/user/$ref", "points to nothing"),
    ("bad_pattern.yaml", "", "cannot compile the schema"),
    ("other_draft.yaml", "/$schema", "only Draft 7"),
    ("yaml_value.yaml", "/properties/day/default", "YAML date is not a JSON value"),
    ("yaml_syntax.yaml", "", "not valid YAML"),
    ("json_syntax.json", "", "not valid JSON"),
]


@pytest.mark.parametrize(("name", "pointer", "reason"), BAD_CASES)
def test_bad_schema_is_rejected_with_file_pointer_and_reason(
    name: str, pointer: str, reason: str
) -> None:
    file = BAD / name
    problems = problems_of(file)
    assert len(problems) == 1, problems
    [problem] = problems
    assert problem.file == str(file)
    assert problem.pointer == pointer
    assert reason in problem.reason
    assert str(problem) == f"{file}: {pointer or '/'}: {problem.reason}"


def test_every_bad_fixture_has_a_case() -> None:
    assert sorted(p.name for p in BAD.iterdir()) == sorted(name for name, _, _ in BAD_CASES)


def test_parse_errors_give_line_and_column() -> None:
    [yaml_problem] = problems_of(BAD / "yaml_syntax.yaml")
    assert "at line 5, column 1" in yaml_problem.reason
    [json_problem] = problems_of(BAD / "json_syntax.json")
    assert "at line 3, column 19" in json_problem.reason


def test_all_problems_across_files_are_reported_together() -> None:
    error_files = {str(p) for p in BAD.iterdir()}
    problems = problems_of(BAD, GOOD)
    assert {p.file for p in problems} == error_files
    message = str(SchemaLoadError(problems))
    assert message.splitlines() == [str(p) for p in problems]


def test_problems_within_one_document_are_all_reported() -> None:
    doc = {
        "$id": 5,
        "type": "array",
        "personal-data": "yes",
        "properties": {"__a": {"type": "string"}, "b": {"categories": [""]}},
    }
    pointers = {p.pointer for p in check_schema(doc, "f.yaml")}
    assert pointers == {
        "/$id",
        "/version",
        "/type",
        "/personal-data",
        "/properties/__a",
        "/properties/b/categories/0",
    }


def test_check_schema_accepts_the_good_fixture_documents() -> None:
    for file, doc in load_documents(GOOD):
        assert check_schema(doc, file) == []


def test_missing_path_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    [problem] = problems_of(GOOD, missing)
    assert problem == SchemaProblem(str(missing), "", "no such file or folder")


@pytest.mark.parametrize(
    "ref", ["https://example.org/x.json", "ftp://example.org/x.json", "file:///etc/passwd"]
)
def test_remote_ref_is_never_fetched(
    ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a schema $ref reached the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    file = write_schema(tmp_path / "s.json", simple_doc(properties={"a": {"$ref": ref}}))
    [problem] = problems_of(file)
    assert problem.pointer == "/properties/a/$ref"
    assert f"remote $ref {ref!r} is not fetched" in problem.reason


def test_relative_ref_to_another_file_is_remote_too(tmp_path: Path) -> None:
    file = write_schema(
        tmp_path / "s.json",
        simple_doc("urn:test:relative", properties={"a": {"$ref": "other.json"}}),
    )
    [problem] = problems_of(file)
    assert problem.pointer == "/properties/a/$ref"
    assert "is not fetched" in problem.reason


def test_local_refs_compile(tmp_path: Path) -> None:
    doc = simple_doc(
        "https://example.org/events/local-ref",
        definitions={"name": {"type": "string"}},
        properties={
            "a": {"$ref": "#/definitions/name"},
            "b": {"$ref": "https://example.org/events/local-ref#/definitions/name"},
        },
    )
    registry = SchemaRegistry.load([write_schema(tmp_path / "s.json", doc)], builtin=False)
    schema = registry.get("https://example.org/events/local-ref", "1")
    assert schema is not None
    schema.validate({"a": "x", "b": "y"})
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        schema.validate({"b": 1})
    assert schema.schema == doc  # compiling rewrites $refs in place; not in our copy


# --- versions, duplicates -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def good() -> SchemaRegistry:
    return SchemaRegistry.load([GOOD], builtin=False)


def test_several_versions_of_one_id_validate_independently(good: SchemaRegistry) -> None:
    v1, v2 = good.get(MULTI, "1"), good.get(MULTI, "2")
    assert v1 is not None
    assert v2 is not None
    v1.validate({"a": "x"})
    v2.validate({"b": 2})
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="must contain"):
        v1.validate({"b": 2})
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="must contain"):
        v2.validate({"a": "x"})
    assert (v1.title, v2.title) == ("Multi, first version", "Multi, second version")


def test_versions_sort_numerically(good: SchemaRegistry) -> None:
    assert good.versions(MULTI) == ["1", "2", "10"]
    assert good.versions("urn:unknown") == []
    assert sorted(["1.10", "1.9", "10", "2", "1"], key=version_key) == [
        "1",
        "1.9",
        "1.10",
        "2",
        "10",
    ]


def test_iteration_is_sorted_by_id_then_version(good: SchemaRegistry) -> None:
    keys = [(s.schema_id, s.version) for s in good]
    assert keys == [
        (MULTI, "1"),
        (MULTI, "2"),
        (MULTI, "10"),
        ("urn:example:events:private", "1"),
    ]
    assert len(good) == 4


def test_get_misses_return_none(good: SchemaRegistry) -> None:
    assert good.get(MULTI, "3") is None
    assert good.get("urn:unknown", "1") is None
    assert good.get(MULTI, 1) is None  # type: ignore[arg-type]  # versions are strings only


def test_integer_version_is_normalised_to_a_string(good: SchemaRegistry) -> None:
    schema = good.get(MULTI, "1")
    assert schema is not None
    assert schema.version == "1"
    assert schema.schema["version"] == "1"
    assert schema.source == str(GOOD / "multi" / "v1.yaml")


def test_identical_duplicate_is_deduplicated(tmp_path: Path) -> None:
    first = write_schema(tmp_path / "a" / "s.json", simple_doc())
    second = tmp_path / "b" / "s.yaml"
    second.parent.mkdir()
    # The same document, written in YAML and with an integer version: equal after normalising.
    second.write_text('"$id": urn:test:simple\nversion: 1\ntype: object\n', encoding="utf-8")
    registry = SchemaRegistry.load([tmp_path / "a", tmp_path / "b"], builtin=False)
    assert len(registry) == 1
    schema = registry.get("urn:test:simple", "1")
    assert schema is not None
    assert schema.source == str(first)


def test_conflicting_duplicate_names_both_files(tmp_path: Path) -> None:
    first = write_schema(tmp_path / "a.json", simple_doc(required=["a"]))
    second = write_schema(tmp_path / "b.json", simple_doc(required=["b"]))
    [problem] = problems_of(tmp_path)
    assert problem.file == str(second)
    assert str(first) in problem.reason
    assert "urn:test:simple version 1" in problem.reason


def test_the_same_file_given_twice_loads_once() -> None:
    registry = SchemaRegistry.load([GOOD, GOOD / "private.yaml"], builtin=False)
    assert len(registry) == 4


def test_folders_skip_hidden_entries_and_other_files(tmp_path: Path) -> None:
    write_schema(tmp_path / "s.json", simple_doc())
    write_schema(tmp_path / ".ipynb_checkpoints" / "s.json", simple_doc(required=["x"]))
    (tmp_path / "notes.txt").write_text("not a schema", encoding="utf-8")
    assert len(SchemaRegistry.load([tmp_path], builtin=False)) == 1


# --- telemetryd keywords, properties, allowed, record head ----------------------------------------


def test_categories_and_personal_data_do_not_disturb_validation(good: SchemaRegistry) -> None:
    schema = good.get("urn:example:events:private", "1")
    assert schema is not None
    assert schema.personal_data is True
    data = {"user": "alice", "detail": {"email": "a@example.org"}, "count": 2}
    assert schema.validate(data) == data
    assert "mode" not in data  # `default` values are not written into events
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        schema.validate({"user": 5})


def test_properties_describe_top_level_fields(good: SchemaRegistry) -> None:
    schema = good.get("urn:example:events:private", "1")
    assert schema is not None
    by_name = {p.name: p for p in schema.properties()}
    assert list(by_name) == ["user", "detail", "count", "mode"]
    user = by_name["user"]
    assert (user.title, user.description, user.type) == ("User name", "Who did it.", "string")
    assert user.categories == ["user-identifier"]
    assert user.required
    assert not by_name["detail"].required
    assert by_name["count"].type == "integer"  # read from the enum's values
    assert by_name["mode"].categories == []


def test_allowed_globs_mark_schemas(tmp_path: Path) -> None:
    registry = SchemaRegistry.load(
        [GOOD], builtin=True, allowed=["https://example.org/*", "urn:nothing:*"]
    )
    allowed = {s.schema_id for s in registry if s.allowed}
    assert allowed == {MULTI}
    everything = SchemaRegistry.load([GOOD], builtin=True)
    assert all(s.allowed for s in everything)


def test_allowed_globs_are_case_sensitive() -> None:
    registry = SchemaRegistry.load([GOOD], builtin=False, allowed=["HTTPS://EXAMPLE.ORG/*"])
    assert not any(s.allowed for s in registry)


def test_record_head_is_precomputed(good: SchemaRegistry) -> None:
    for schema in good:
        assert schema.record_head == record.record_head(schema.schema_id, schema.version)


# --- the shipped schemas --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> SchemaRegistry:
    return SchemaRegistry.load()


def test_shipped_schemas_all_load(shipped: SchemaRegistry) -> None:
    ids = {s.schema_id for s in shipped}
    assert ids >= {
        CONTENTS,
        "https://events.jupyter.org/jupyter_server/kernel_actions/v1",
        "https://events.jupyter.org/jupyter_server/gateway_client/v1",
        "https://schema.jupyter.org/jupyterhub/events/server-action",
        "https://events.telemetryd.org/telemetryd/rejected_event/v1",
    }
    assert len(shipped) == len(load_documents(builtin_schema_dir()))
    for schema in shipped:
        assert Path(schema.source).is_relative_to(builtin_schema_dir())
        assert schema.title
        assert schema.description


def test_own_schemas_document_every_property(shipped: SchemaRegistry) -> None:
    own = [s for s in shipped if s.schema_id.startswith(OWN_PREFIX)]
    assert own
    for schema in own:
        for prop in schema.properties():
            assert prop.title, prop.name
            assert prop.description, prop.name
            assert prop.categories, prop.name


def test_jupyter_server_contents_service_validates_events(shipped: SchemaRegistry) -> None:
    schema = shipped.get(CONTENTS, "1")
    assert schema is not None
    schema.validate({"action": "save", "path": "a.ipynb"})
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="must be one of"):
        schema.validate({"action": "explode", "path": "a"})


def test_rejected_event_schema_matches_a_dead_letter_record(shipped: SchemaRegistry) -> None:
    schema = shipped.get("https://events.telemetryd.org/telemetryd/rejected_event/v1", "1")
    assert schema is not None
    schema.validate(
        {
            "reason": "invalid_json",
            "message": "Expecting value: line 1 column 1 (char 0)",
            "raw": "/w==",
            "raw_encoding": "base64",
            "raw_bytes": 2,
            "raw_truncated": False,
            "line": 3,
        }
    )
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        schema.validate({"reason": "bored", "message": "x"})


def test_shipped_schemas_are_accepted_by_jupyter_events(shipped: SchemaRegistry) -> None:
    from jupyter_events.schema import EventSchema

    for schema in shipped:
        assert EventSchema(schema.schema).id == schema.schema_id


def test_user_schema_conflicting_with_a_shipped_one_is_a_problem(tmp_path: Path) -> None:
    shipped_file = builtin_schema_dir() / "jupyter_server" / "contents_service" / "v1.yaml"
    copy = tmp_path / "contents.yaml"
    shutil.copy(shipped_file, copy)
    assert len(SchemaRegistry.load([copy])) == len(SchemaRegistry.load())
    copy.write_text(copy.read_text(encoding="utf-8") + "additionalProperties: false\n", "utf-8")
    [problem] = problems_of(copy, builtin=True)
    assert problem.file == str(copy)
    assert "already loaded from" in problem.reason


def test_compiled_schema_is_immutable(good: SchemaRegistry) -> None:
    schema = next(iter(good))
    assert isinstance(schema, CompiledSchema)
    with pytest.raises(AttributeError):
        schema.allowed = False  # type: ignore[misc]
