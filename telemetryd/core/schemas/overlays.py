"""Category overlays: privacy categories for schemas the operator does not own, merged in at load.

An overlay file (YAML or JSON) names one schema version and adds categories to its properties:
`{"$id": ..., "version": ..., "description": ..., "categories": {"<data pointer>": [...]}}`, the
pointers written as schemas.categories describes. An overlay only adds: its categories are
merged with the schema's own (union), and every problem (a schema that is not loaded, a pointer
to a property the schema does not have, a malformed category list) names the file and the
pointer, and refuses the load as a schema problem does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telemetryd.core.schemas.categories import property_schemas, subschema_at
from telemetryd.core.schemas.loading import documents_under
from telemetryd.core.schemas.model import (
    CompiledSchema,
    SchemaProblem,
    json_pointer,
    json_type,
)
from telemetryd.core.schemas.rules import category_list_problems

OVERLAY_KEYS = ("$id", "version", "description", "categories")


@dataclass(frozen=True, slots=True)
class CategoryOverlay:
    """One checked overlay file: categories to add to one (schema id, version)."""

    file: str
    schema_id: str
    version: str
    description: str
    categories: dict[str, tuple[str, ...]]


def load_overlays(paths: Sequence[Path]) -> tuple[list[CategoryOverlay], list[SchemaProblem]]:
    """Every overlay file under `paths` (folders recursively, as schemas), checked alone."""
    overlays: list[CategoryOverlay] = []
    problems: list[SchemaProblem] = []
    for name, doc in documents_under(paths, problems):
        result = check_overlay(doc, name)
        if isinstance(result, CategoryOverlay):
            overlays.append(result)
        else:
            problems += result
    return overlays, problems


def check_overlay(doc: Any, file: str) -> CategoryOverlay | list[SchemaProblem]:
    """The overlay a parsed document states, or every way it is malformed."""
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else f"a JSON {json_type(doc)}"
        return [SchemaProblem(file, "", f"an overlay must be a mapping, got {got}")]
    reasons = [
        (json_pointer([str(key)]), f"unknown key; an overlay has {', '.join(OVERLAY_KEYS)}")
        for key in doc
        if key not in OVERLAY_KEYS
    ]
    schema_id = doc.get("$id")
    if not isinstance(schema_id, str) or not schema_id:
        reasons.append(("/$id", "must be the $id of the schema the overlay categorises"))
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip():
        reasons.append(("/version", 'must be the version of that schema, such as "1"'))
    description = doc.get("description", "")
    if not isinstance(description, str):
        reasons.append(("/description", "must be a string: why these categories"))
    categories = doc.get("categories")
    if not isinstance(categories, dict) or not categories:
        reasons.append(("/categories", "must map JSON pointers into the data to category lists"))
        categories = {}
    for pointer, names in categories.items():
        if not isinstance(pointer, str):
            reasons.append((json_pointer(["categories", str(pointer)]), "must be a string"))
            continue
        reasons += [
            (json_pointer(["categories", pointer, *index]), f"{pointer!r}: {reason}")
            for index, reason in category_list_problems(names)
        ]
    if reasons:
        return [SchemaProblem(file, pointer, reason) for pointer, reason in reasons]
    return CategoryOverlay(
        file=file,
        schema_id=str(schema_id),
        version=str(version),
        description=str(description).strip(),
        categories={p: tuple(dict.fromkeys(names)) for p, names in categories.items()},
    )


def apply_overlays(
    schemas: Sequence[CompiledSchema], overlays: Sequence[CategoryOverlay]
) -> tuple[list[CompiledSchema], list[SchemaProblem]]:
    """The schemas with their overlays' categories merged in, and every overlay problem.

    An overlay must name a loaded (schema id, version) and only pointers its schema has.
    """
    by_key = {(s.schema_id, s.version): s for s in schemas}
    versions: dict[str, list[str]] = {}
    for schema_id, version in by_key:
        versions.setdefault(schema_id, []).append(version)
    added: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
    problems: list[SchemaProblem] = []
    for overlay in overlays:
        key = (overlay.schema_id, overlay.version)
        schema = by_key.get(key)
        if schema is None:
            problems.append(_unknown_schema(overlay, versions.get(overlay.schema_id, [])))
            continue
        into = added.setdefault(key, {})
        for pointer, names in overlay.categories.items():
            found = subschema_at(schema.schema, pointer)
            if isinstance(found, str):
                problems.append(
                    SchemaProblem(
                        overlay.file,
                        json_pointer(["categories", pointer]),
                        f"{pointer!r}: {found} ({overlay.schema_id} version {overlay.version})",
                    )
                )
            else:
                into[pointer] = tuple(dict.fromkeys([*into.get(pointer, ()), *names]))
    return [_merged(s, added.get((s.schema_id, s.version))) for s in schemas], problems


def _unknown_schema(overlay: CategoryOverlay, loaded: list[str]) -> SchemaProblem:
    if loaded:
        return SchemaProblem(
            overlay.file,
            "/version",
            f"{overlay.schema_id} has no version {overlay.version!r} loaded; "
            f"loaded versions: {', '.join(loaded)}",
        )
    return SchemaProblem(
        overlay.file,
        "/$id",
        f"no schema {overlay.schema_id!r} is loaded; an overlay categorises a loaded schema",
    )


def _merged(schema: CompiledSchema, added: dict[str, tuple[str, ...]] | None) -> CompiledSchema:
    if not added:
        return schema
    categories = dict(schema.categories)
    for pointer, names in added.items():
        categories[pointer] = tuple(dict.fromkeys([*categories.get(pointer, ()), *names]))
    # In the schema's order, as its own categories are, whichever file named them.
    order = {
        json_pointer(data): i for i, (data, _, _) in enumerate(property_schemas(schema.schema))
    }
    merged = dict(sorted(categories.items(), key=lambda item: order[item[0]]))
    return dataclasses.replace(schema, categories=merged, overlay_categories=added)
