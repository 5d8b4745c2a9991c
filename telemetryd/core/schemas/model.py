"""What the registry holds and reports: compiled schemas, their properties, schema problems."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_VERSION_CHUNKS = re.compile(r"([0-9]+)")


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One reason a schema file is rejected, located by a JSON pointer into its document."""

    file: str
    pointer: str  # RFC 6901, "" for the document itself
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: {self.reason}"


class SchemaLoadError(Exception):
    """Schemas could not be loaded; `problems` lists every one found, not just the first."""

    def __init__(self, problems: Sequence[SchemaProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def json_pointer(path: Sequence[str | int]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


@dataclass(frozen=True, slots=True)
class PropertyInfo:
    """A top-level property as shown to people (`schemas show`, GET /api/schemas); its
    categories are the schema's own and its overlays'."""

    name: str
    title: str
    description: str
    type: str  # the JSON type(s), "string|null" for several, "any" when unconstrained
    categories: list[str]
    required: bool


@dataclass(frozen=True, slots=True, eq=False)  # identity: the hot path keys dicts by it
class CompiledSchema:
    """A registered (schema id, version) with everything the hot path needs precomputed."""

    schema_id: str
    version: str
    title: str
    description: str
    schema: dict[str, Any]
    source: str
    validate: Callable[[Any], Any]
    allowed: bool
    record_head: bytes
    personal_data: bool | None
    #: Whether valid data may carry keys the schema does not declare (no
    #: `additionalProperties: false`); only then can a data key collide with `__metadata`.
    open_keys: bool = True
    #: The top-level `properties`: data with no other key cannot hold a reserved (__) one,
    #: as no declared property may start with __.
    declared_keys: frozenset[str] = frozenset()
    #: Data pointer → privacy categories, from the schema's own `categories` at any depth and
    #: from category overlays (merged); the pointer convention is in schemas.categories.
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The part of `categories` that overlays added, to show where a category comes from.
    overlay_categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def properties(self) -> list[PropertyInfo]:
        props = self.schema.get("properties")
        if not isinstance(props, dict):
            return []
        required = self.schema.get("required")
        required_names = set(required) if isinstance(required, list) else set()
        return [
            _property_info(
                name,
                spec,
                list(self.categories.get(json_pointer([name]), ())),
                name in required_names,
            )
            for name, spec in props.items()
        ]


def _property_info(name: str, spec: Any, categories: list[str], required: bool) -> PropertyInfo:
    spec = spec if isinstance(spec, dict) else {}
    return PropertyInfo(
        name=name,
        title=text_of(spec.get("title")),
        description=text_of(spec.get("description")),
        type=_type_of(spec),
        categories=categories,
        required=required,
    )


def text_of(value: Any) -> str:
    """A title's or description's text, stripped; "" when it is missing or not a string."""
    return value.strip() if isinstance(value, str) else ""


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_of(spec: dict[str, Any]) -> str:
    declared = spec.get("type")
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list):
        return "|".join(str(t) for t in declared)
    # Jupyter's schemas often give only an enum; its values say what the type is.
    values = spec.get("enum") if isinstance(spec.get("enum"), list) else None
    if values is None and "const" in spec:
        values = [spec["const"]]
    if values:
        return "|".join(dict.fromkeys(json_type(v) for v in values))
    return "any"


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders versions as people read them: "2" < "10", "1.9" < "1.10"."""
    return tuple(
        (0, int(chunk), "") if chunk.isascii() and chunk.isdigit() else (1, 0, chunk)
        for chunk in _VERSION_CHUNKS.split(version)
        if chunk
    )
