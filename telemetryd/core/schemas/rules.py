"""What a schema must satisfy (docs/schemas.md): every problem found in a document, none raised.

A document is checked against Draft 7's metaschema and then against telemetryd's own rules: an
absolute `$id`, a `version`, an object type, no reserved (__) property names, well-formed
`categories`, and a title and description for telemetryd's own schemas.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import fastjsonschema
import jsonschema_specifications

from telemetryd.core.schemas.categories import property_schemas
from telemetryd.core.schemas.compilation import NO_FETCH
from telemetryd.core.schemas.model import SchemaProblem, json_pointer, json_type

OWN_ID_PREFIX = "https://events.telemetryd.org/"
KNOWN_CATEGORIES = (
    "unrestricted",
    "user-identifier",
    "user-identifiable-information",
    "personal-data",
)
_DRAFT7_URIS = frozenset(
    {
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft-07/schema",
        "https://json-schema.org/draft-07/schema#",
    }
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_DRAFT7 = "http://json-schema.org/draft-07/schema#"


def check_schema(doc: Any, file: str) -> list[SchemaProblem]:
    """Every way `doc` breaks the schema rules (docs/schemas.md); compiling is not attempted."""
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else _a(json_type(doc))
        return [SchemaProblem(file, "", f"a schema must be a JSON object (a mapping), got {got}")]
    problems = _non_json_values(doc, file)
    problems += _metaschema_problems(doc, file)
    # A pointer the metaschema already explained needs no second, vaguer problem from our rules.
    explained = {p.pointer for p in problems}
    problems += [p for p in _rule_problems(doc, file) if p.pointer not in explained]
    return problems


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _non_json_values(doc: dict[str, Any], file: str) -> list[SchemaProblem]:
    """YAML can hold dates, sets and non-string keys, which no JSON consumer of a schema takes."""
    problems: list[SchemaProblem] = []

    def walk(node: Any, path: list[str | int]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    problems.append(
                        SchemaProblem(
                            file,
                            json_pointer([*path, str(key)]),
                            f"key {key!r} is a {type(key).__name__}, not a string; quote it",
                        )
                    )
                elif path or key != "version":  # the version rule explains a bad version
                    walk(value, [*path, key])
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, [*path, i])
        elif node is not None and not isinstance(node, str | int | float | bool):
            problems.append(
                SchemaProblem(
                    file,
                    json_pointer(path),
                    f"a YAML {type(node).__name__} is not a JSON value; quote it",
                )
            )

    walk(doc, [])
    return problems


@functools.cache
def _metaschema_check() -> Callable[[Any], Any]:
    """Draft 7's metaschema compiled by fastjsonschema: the quick yes for a good schema.

    jsonschema reports every problem with its path, but importing it costs over a second where
    its format checkers pull in rfc3987_syntax; it is imported only to explain a bad schema.
    """
    meta = jsonschema_specifications.REGISTRY.contents(_DRAFT7)
    # use_default=False: the metaschema's defaults must not be written into the checked schema.
    check: Callable[[Any], Any] = fastjsonschema.compile(
        meta, handlers=NO_FETCH, use_formats=False, use_default=False
    )
    return check


def _metaschema_problems(doc: dict[str, Any], file: str) -> list[SchemaProblem]:
    try:
        _metaschema_check()(doc)
    except fastjsonschema.JsonSchemaValueException:
        pass
    else:
        return []
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import best_match

    problems = []
    for error in Draft7Validator(Draft7Validator.META_SCHEMA).iter_errors(doc):
        # "not valid under any of the given schemas" hides which alternative came closest.
        detail = best_match(error.context) if error.context else error
        problems.append(
            SchemaProblem(
                file,
                json_pointer(list(error.absolute_path)),
                f"not a valid Draft 7 schema: {detail.message}",
            )
        )
    return sorted(problems, key=lambda p: p.pointer)


def _rule_problems(doc: dict[str, Any], file: str) -> list[SchemaProblem]:
    reasons: list[tuple[str, str]] = []
    schema_id = doc.get("$id")
    reasons += _check_id(schema_id)
    reasons += _check_version(doc)
    if "$schema" in doc and doc["$schema"] not in _DRAFT7_URIS:
        reasons.append(("/$schema", f"only Draft 7 schemas are supported, not {doc['$schema']!r}"))
    if doc.get("type") != "object":
        got = f"{doc['type']!r}" if "type" in doc else "nothing"
        reasons.append(("/type", f'must be "object" (an event is a JSON object), got {got}'))
    if "personal-data" in doc and not isinstance(doc["personal-data"], bool):
        reasons.append(("/personal-data", "must be true or false"))
    props = doc.get("properties")
    if isinstance(props, dict):
        reasons += [
            (
                json_pointer(["properties", name]),
                "property names starting with __ are "
                "reserved for record metadata (__timestamp__, __schema__, ...)",
            )
            for name in props
            if isinstance(name, str) and name.startswith("__")
        ]
    reasons += _check_categories(doc)
    if isinstance(schema_id, str) and schema_id.startswith(OWN_ID_PREFIX):
        for key in ("title", "description"):
            value = doc.get(key)
            if not isinstance(value, str) or not value.strip():
                reasons.append((f"/{key}", f"telemetryd's own schemas need a non-empty {key}"))
    return [SchemaProblem(file, pointer, reason) for pointer, reason in reasons]


def _check_id(schema_id: Any) -> list[tuple[str, str]]:
    if schema_id is None:
        return [("/$id", "missing: every schema needs an $id, an absolute URI")]
    if not isinstance(schema_id, str):
        return [("/$id", f"must be a string (an absolute URI), got {_a(json_type(schema_id))}")]
    problem = (
        "/$id",
        f"{schema_id!r} is not an absolute URI: it needs a scheme such as https:// or urn:",
    )
    if any(c.isspace() for c in schema_id):
        return [problem]
    try:
        parts = urlsplit(schema_id)
    except ValueError:
        return [problem]
    if not _SCHEME.fullmatch(parts.scheme):
        return [problem]
    if parts.scheme in ("http", "https") and not parts.netloc:
        return [("/$id", f"{schema_id!r} has no host after {parts.scheme}://")]
    return []


def _check_version(doc: dict[str, Any]) -> list[tuple[str, str]]:
    if "version" not in doc:
        return [("/version", 'missing: every schema needs a version, such as "1"')]
    version = doc["version"]
    if isinstance(version, str):
        return [] if version.strip() else [("/version", "must not be empty")]
    if isinstance(version, int) and not isinstance(version, bool):
        return []
    got = "null" if version is None else f"{type(version).__name__} {version!r}"
    return [("/version", f'must be a string such as "1" (or an integer), got {got}')]


def _check_categories(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Categories drive the privacy policy, so a typo'd shape must fail, not silently redact."""
    return [
        (json_pointer([*where, "categories", *index]), reason)
        for _, where, spec in property_schemas(doc)
        if "categories" in spec
        for index, reason in category_list_problems(spec["categories"])
    ]


def category_list_problems(categories: Any) -> list[tuple[list[int], str]]:
    """Why a `categories` value is not a list of category names: (index path, reason) pairs.

    The vocabulary is open, as in jupyter_telemetry: any non-empty name is accepted, and
    KNOWN_CATEGORIES only suggests the usual ones. Schemas and overlays share this check.
    """
    if not isinstance(categories, list):
        return [([], "must be a list of category names")]
    return [
        ([i], "must be a non-empty string such as " + ", ".join(repr(c) for c in KNOWN_CATEGORIES))
        for i, category in enumerate(categories)
        if not isinstance(category, str) or not category.strip()
    ]
