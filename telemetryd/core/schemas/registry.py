"""The schema registry: every schema loaded, checked and compiled once, then looked up fast.

Loading is strict and exhaustive: every file is read, every rule (docs/schemas.md) is checked and
every problem is collected before `SchemaLoadError` is raised, so an operator fixes a folder of
schemas in one pass instead of one error per restart. After loading, the daemon's hot path only
calls `SchemaRegistry.get`, two dict lookups.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telemetryd.core.schemas.compilation import compile_schema
from telemetryd.core.schemas.loading import (
    builtin_overlay_dir,
    builtin_schema_dir,
    documents_under,
)
from telemetryd.core.schemas.model import (
    CompiledSchema,
    SchemaLoadError,
    SchemaProblem,
    version_key,
)
from telemetryd.core.schemas.overlays import apply_overlays, load_overlays
from telemetryd.core.schemas.rules import check_schema


def compile_schemas(
    paths: Sequence[Path] = (),
    *,
    builtin: bool = False,
    allowed: Sequence[str] = (),
    overlays: Sequence[Path] = (),
    builtin_overlays: bool = True,
) -> tuple[list[CompiledSchema], list[SchemaProblem]]:
    """Check and compile every schema under `paths`, with the category overlays under
    `overlays` merged in, without raising.

    The shipped overlays describe the shipped schemas, so they apply when both `builtin` and
    `builtin_overlays` are on. Returns every good schema in load order (an identical duplicate
    appears once per file, so a caller can report each file) and every problem. A document with
    the same ($id, version) as an earlier one but different content is a problem, and left out.
    """
    is_allowed = _AllowList(allowed)
    roots = ([builtin_schema_dir()] if builtin else []) + list(paths)
    compiled: list[CompiledSchema] = []
    problems: list[SchemaProblem] = []
    first: dict[tuple[str, str], tuple[str, str]] = {}  # key -> (canonical JSON, file)
    for name, doc in documents_under(roots, problems):
        result = _compile_one(doc, name, is_allowed, first)
        if isinstance(result, CompiledSchema):
            compiled.append(result)
        else:
            problems += result
    overlay_roots = ([builtin_overlay_dir()] if builtin and builtin_overlays else []) + list(
        overlays
    )
    found, overlay_problems = load_overlays(overlay_roots)
    compiled, unmatched = apply_overlays(compiled, found)
    return compiled, problems + overlay_problems + unmatched


def _compile_one(
    doc: Any,
    file: str,
    is_allowed: Callable[[str], bool],
    first: dict[tuple[str, str], tuple[str, str]],
) -> CompiledSchema | list[SchemaProblem]:
    problems = check_schema(doc, file)
    if problems:
        return problems
    doc = _normalised(doc)
    schema_id, version = doc["$id"], doc["version"]
    canonical = json.dumps(doc, sort_keys=True)
    earlier = first.setdefault((schema_id, version), (canonical, file))
    if earlier[0] != canonical:
        return [
            SchemaProblem(
                file,
                "",
                f"{schema_id} version {version} is already loaded from {earlier[1]} "
                "with a different document; give this one a new version",
            )
        ]
    result = compile_schema(doc, file, allowed=is_allowed(schema_id))
    return [result] if isinstance(result, SchemaProblem) else result


def _normalised(doc: dict[str, Any]) -> dict[str, Any]:
    version = doc["version"]
    return doc if isinstance(version, str) else {**doc, "version": str(version)}


class _AllowList:
    def __init__(self, patterns: Sequence[str]) -> None:
        self._match = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
            if patterns
            else None
        )

    def __call__(self, schema_id: str) -> bool:
        # fnmatch.translate, not fnmatch.fnmatch: case-sensitive on every OS, as URIs are.
        return self._match is None or self._match(schema_id) is not None


_NO_VERSIONS: dict[str, CompiledSchema] = {}


@dataclass(slots=True)
class SchemaRegistry:
    """Every registered schema by id and version; several versions of an id coexist."""

    _by_id: dict[str, dict[str, CompiledSchema]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        paths: Sequence[Path] = (),
        *,
        builtin: bool = True,
        allowed: Sequence[str] = (),
        overlays: Sequence[Path] = (),
        builtin_overlays: bool = True,
    ) -> SchemaRegistry:
        """Load the shipped schemas (if `builtin`) and those under `paths`, with the category
        overlays (the shipped ones if `builtin_overlays`, and those under `overlays`).

        Raises SchemaLoadError with every problem in every file.
        """
        compiled, problems = compile_schemas(
            paths,
            builtin=builtin,
            allowed=allowed,
            overlays=overlays,
            builtin_overlays=builtin_overlays,
        )
        if problems:
            raise SchemaLoadError(problems)
        return cls.from_schemas(compiled)

    @classmethod
    def from_schemas(cls, schemas: Sequence[CompiledSchema]) -> SchemaRegistry:
        """A registry of already compiled schemas; the first of a duplicated key wins."""
        by_id: dict[str, dict[str, CompiledSchema]] = {}
        for schema in sorted(schemas, key=lambda s: (s.schema_id, version_key(s.version))):
            by_id.setdefault(schema.schema_id, {}).setdefault(schema.version, schema)
        return cls(by_id)

    def get(self, schema_id: str, version: str) -> CompiledSchema | None:
        return self._by_id.get(schema_id, _NO_VERSIONS).get(version)

    def by_id(self) -> Mapping[str, Mapping[str, CompiledSchema]]:
        """id → version → schema, read-only; the hot path looks up in it without a call."""
        return self._by_id

    def versions(self, schema_id: str) -> list[str]:
        # from_schemas inserts versions in version_key order, so the dict order is already sorted.
        return list(self._by_id.get(schema_id, _NO_VERSIONS))

    def schema_ids(self) -> list[str]:
        return list(self._by_id)

    def __iter__(self) -> Iterator[CompiledSchema]:
        for versions in self._by_id.values():
            yield from versions.values()

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._by_id.values())
