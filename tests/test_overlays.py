"""Category overlays: checked against the loaded schemas, merged with their own categories, and
the shipped ones categorise every property of every shipped schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetryd.config import parse_config
from telemetryd.core.schemas.categories import property_schemas
from telemetryd.core.schemas.loading import builtin_overlay_dir
from telemetryd.core.schemas.model import SchemaLoadError, json_pointer
from telemetryd.core.schemas.registry import SchemaRegistry

SCHEMA: dict[str, Any] = {
    "$id": "https://example.org/notebook",
    "version": "1",
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "cells": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"source": {"type": "string", "categories": ["unrestricted"]}},
            },
        },
    },
}
CONTENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
KERNELS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
GATEWAY = "https://events.jupyter.org/jupyter_server/gateway_client/v1"
HUB = "https://schema.jupyter.org/jupyterhub/events/server-action"
PIONEER = "https://events.telemetryd.org/jupyterlab_pioneer/"


def write(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def overlay(**changes: Any) -> dict[str, Any]:
    return {
        "$id": SCHEMA["$id"],
        "version": "1",
        "description": "Notebook paths and cell source name people and their work.",
        "categories": {"/path": ["personal-data"], "/cells/*/source": ["personal-data"]},
        **changes,
    }


def load(tmp_path: Path, *overlays: Any) -> SchemaRegistry:
    schema = write(tmp_path / "schema.yaml", SCHEMA)
    folder = tmp_path / "overlays"
    folder.mkdir(exist_ok=True)
    for i, doc in enumerate(overlays):
        write(folder / f"o{i}.yaml", doc)
    return SchemaRegistry.load([schema], builtin=False, overlays=[folder])


def problems(tmp_path: Path, *overlays: Any) -> list[str]:
    with pytest.raises(SchemaLoadError) as caught:
        load(tmp_path, *overlays)
    return [str(p) for p in caught.value.problems]


def test_overlay_categories_merge_with_the_schema_s_own(tmp_path: Path) -> None:
    second = overlay(categories={"/path": ["user-identifier", "personal-data"]})
    schema = load(tmp_path, overlay(), second).get(SCHEMA["$id"], "1")
    assert schema is not None
    assert list(schema.categories.items()) == [  # in the schema's order
        ("/path", ("personal-data", "user-identifier")),
        ("/cells/*/source", ("unrestricted", "personal-data")),
    ]
    assert schema.overlay_categories == {
        "/path": ("personal-data", "user-identifier"),
        "/cells/*/source": ("personal-data",),
    }


def test_an_integer_version_names_the_string_version(tmp_path: Path) -> None:
    schema = load(tmp_path, overlay(version=1)).get(SCHEMA["$id"], "1")
    assert schema is not None
    assert "/path" in schema.overlay_categories


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            overlay(**{"$id": "https://example.org/nope"}),
            "/$id: no schema 'https://example.org/nope' is loaded; "
            "an overlay categorises a loaded schema",
        ),
        (
            overlay(version="2"),
            "/version: https://example.org/notebook has no version '2' loaded; loaded versions: 1",
        ),
        (
            overlay(categories={"/cells/*/sauce": ["personal-data"]}),
            "/categories/~1cells~1*~1sauce: '/cells/*/sauce': the schema has no property "
            "'sauce' under /cells/* (https://example.org/notebook version 1)",
        ),
        (
            overlay(categories={"/cells/source": ["personal-data"]}),
            "/categories/~1cells~1source: '/cells/source': the schema has no property "
            "'source' under /cells (https://example.org/notebook version 1)",
        ),
        (
            overlay(categories={"path": ["personal-data"]}),
            "/categories/path: 'path': must be a JSON pointer into the event's data, "
            "starting with / (https://example.org/notebook version 1)",
        ),
        (
            overlay(categories={"/path": ["personal-data", ""]}),
            "/categories/~1path/1: '/path': must be a non-empty string such as 'unrestricted'",
        ),
        (
            overlay(categories={"/path": "personal-data"}),
            "/categories/~1path: '/path': must be a list of category names",
        ),
        (overlay(categories={}), "/categories: must map JSON pointers into the data"),
        (overlay(extra=1), "/extra: unknown key; an overlay has $id, version, description"),
        (overlay(version=None), '/version: must be the version of that schema, such as "1"'),
        (
            {"version": "1", "categories": {"/path": ["personal-data"]}},
            "/$id: must be the $id of the schema the overlay categorises",
        ),
        ([1, 2], "/: an overlay must be a mapping, got a JSON array"),
    ],
)
def test_overlay_problems_name_the_file_and_the_pointer(
    tmp_path: Path, doc: Any, expected: str
) -> None:
    found = problems(tmp_path, doc)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'overlays' / 'o0.yaml'}: {expected}"), found


def test_a_broken_overlay_file_and_a_missing_folder_are_load_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("categories: [", encoding="utf-8")
    with pytest.raises(SchemaLoadError) as caught:
        SchemaRegistry.load(
            builtin=False, overlays=[tmp_path / "broken.yaml", tmp_path / "missing"]
        )
    assert [p.file for p in caught.value.problems] == [
        str(tmp_path / "broken.yaml"),
        str(tmp_path / "missing"),
    ]
    assert "not valid YAML" in caught.value.problems[0].reason


@pytest.fixture(scope="module")
def shipped() -> SchemaRegistry:
    return SchemaRegistry.load()


def categories(registry: SchemaRegistry, schema_id: str) -> dict[str, tuple[str, ...]]:
    schema = registry.get(schema_id, "1")
    assert schema is not None
    return dict(schema.categories)


def test_the_shipped_overlays_apply_by_default(shipped: SchemaRegistry) -> None:
    assert categories(shipped, CONTENTS)["/path"] == ("personal-data",)
    assert categories(shipped, CONTENTS)["/source_path"] == ("personal-data",)
    assert categories(shipped, KERNELS)["/msg"] == ("personal-data",)
    assert categories(shipped, GATEWAY)["/msg"] == ("personal-data",)
    assert categories(shipped, HUB)["/username"] == ("user-identifier",)
    assert categories(shipped, HUB)["/servername"] == ("personal-data",)
    contents = shipped.get(CONTENTS, "1")
    assert contents is not None
    assert contents.overlay_categories["/path"] == ("personal-data",)


def test_pioneer_s_content_is_personal_data(shipped: SchemaRegistry) -> None:
    clipboard = categories(shipped, PIONEER + "ClipboardCopyEvent/v1")
    assert clipboard["/eventInfo/selection"] == ("personal-data",)
    assert clipboard["/eventInfo/cells/*/metadata"] == ("personal-data",)
    edit = categories(shipped, PIONEER + "CellEditEvent/v1")
    assert edit["/eventInfo/doc"] == ("personal-data",)  # the cell's source
    execute = categories(shipped, PIONEER + "CellExecuteEvent/v1")
    assert execute["/eventInfo/kernelError/traceback"] == ("personal-data",)  # outputs
    opened = categories(shipped, PIONEER + "NotebookOpenEvent/v1")
    assert opened["/eventInfo/environ"] == ("personal-data",)
    for name in ("NotebookOpenEvent", "CellExecuteEvent", "ClipboardPasteEvent"):
        pioneer = categories(shipped, PIONEER + name + "/v1")
        assert pioneer["/notebookContent"] == ("personal-data",)
        assert pioneer["/notebookPath"] == ("personal-data",)


def test_every_shipped_property_is_categorised(shipped: SchemaRegistry) -> None:
    # Private by default: every property at every depth has categories of its own or of the
    # property that holds it, so a policy never meets an uncategorised one in shipped events.
    for schema in shipped:
        for data, _, _ in property_schemas(schema.schema):
            enclosing = [json_pointer(data[:n]) for n in range(len(data), 0, -1)]
            assert any(p in schema.categories for p in enclosing), (schema.schema_id, data)


def test_every_shipped_overlay_says_why(shipped: SchemaRegistry) -> None:
    files = sorted(builtin_overlay_dir().rglob("*.yaml"))
    assert len(files) == 4
    for file in files:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
        for pointer in doc["categories"]:
            name = pointer.rsplit("/", 1)[1]
            assert name in doc["description"], (file, pointer)


def test_builtin_overlays_can_be_turned_off() -> None:
    registry = SchemaRegistry.load(builtin_overlays=False)
    assert categories(registry, CONTENTS) == {}


def test_the_configuration_takes_overlays() -> None:
    settings = parse_config('[schemas]\noverlays = ["/etc/telemetryd/overlays"]\n').schemas
    assert settings.overlays == [Path("/etc/telemetryd/overlays")]
    assert settings.builtin_overlays is True
    assert parse_config("[schemas]\nbuiltin_overlays = false\n").schemas.builtin_overlays is False
