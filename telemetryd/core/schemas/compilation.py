"""A checked schema document compiled into its fastjsonschema validator, never fetching a $ref."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

import fastjsonschema

from telemetryd.core.record import record_head
from telemetryd.core.schemas.categories import category_map
from telemetryd.core.schemas.model import CompiledSchema, SchemaProblem, json_pointer, text_of


class _RemoteRefRefused(Exception):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uri = uri


def _refuse(uri: str) -> Any:
    raise _RemoteRefRefused(uri)


class _NoFetch(Mapping[str, Callable[[str], Any]]):
    """fastjsonschema handlers for every URI scheme: schemas must never reach the network.

    fastjsonschema fetches with urllib for any scheme missing from `handlers`, so listing http
    and https would still leave ftp:, file: and the rest open; this mapping contains them all.
    """

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse

    def __contains__(self, scheme: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


NO_FETCH = _NoFetch()


def compile_schema(
    doc: dict[str, Any], file: str, *, allowed: bool
) -> CompiledSchema | SchemaProblem:
    """The registered form of a checked document whose version is a string, or the problem."""
    validate = compile_validator(doc, file)
    if isinstance(validate, SchemaProblem):
        return validate
    schema_id, version = doc["$id"], doc["version"]
    personal_data = doc.get("personal-data")
    return CompiledSchema(
        schema_id=schema_id,
        version=version,
        title=text_of(doc.get("title")),
        description=text_of(doc.get("description")),
        schema=doc,
        source=file,
        validate=validate,
        allowed=allowed,
        record_head=record_head(schema_id, version),
        personal_data=personal_data if isinstance(personal_data, bool) else None,
        open_keys=not (doc.get("additionalProperties") is False and "patternProperties" not in doc),
        declared_keys=frozenset(doc.get("properties", {})),
        categories=category_map(doc),
    )


def compile_validator(doc: dict[str, Any], file: str) -> Callable[[Any], Any] | SchemaProblem:
    """The fastjsonschema validator of a checked document, or the problem compiling it."""
    broken = _broken_local_ref(doc)
    if broken is not None:
        # fastjsonschema would only say "Unresolvable ref: <segment>", without saying where.
        pointer, ref = broken
        return SchemaProblem(file, pointer, f"$ref {ref!r} points to nothing in this document")
    try:
        # fastjsonschema rewrites $ref values in place; the registry keeps the document as loaded.
        # use_default=False: validation must not add `default` values into the event's data.
        validate: Callable[[Any], Any] = fastjsonschema.compile(
            copy.deepcopy(doc), handlers=NO_FETCH, use_default=False
        )
    except _RemoteRefRefused as e:
        return SchemaProblem(
            file,
            _find_ref(doc, e.uri),
            f"remote $ref {e.uri!r} is not fetched; inline the definition "
            "(under definitions, referenced as #/definitions/...)",
        )
    except fastjsonschema.JsonSchemaDefinitionException as e:
        return SchemaProblem(file, "", f"cannot compile the schema: {e}")
    except (re.error, RecursionError, ValueError, TypeError) as e:
        # A bad `pattern` regex or a pathological structure fails inside the code generator.
        return SchemaProblem(file, "", f"cannot compile the schema: {type(e).__name__}: {e}")
    return validate


def _resolve_pointer(doc: Any, pointer: str) -> bool:
    node = doc
    for raw in pointer.split("/")[1:]:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _broken_local_ref(doc: dict[str, Any]) -> tuple[str, str] | None:
    """The first `$ref: "#/..."` that does not resolve, as (pointer of the $ref, its value)."""
    for path, ref in _refs(doc, []):
        if ref.startswith("#/") and not _resolve_pointer(doc, ref[1:]):
            return json_pointer([*path, "$ref"]), ref
    return None


def _refs(node: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield path, node["$ref"]
        for key, value in node.items():
            yield from _refs(value, [*path, key])
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _refs(item, [*path, i])


def _find_ref(doc: dict[str, Any], uri: str) -> str:
    """The pointer of the $ref that resolved to `uri` (best effort: "" if nested $ids hide it)."""
    base = doc.get("$id")
    target = urldefrag(uri).url
    for path, ref in _refs(doc, []):
        if urldefrag(urljoin(base if isinstance(base, str) else "", ref)).url == target:
            return json_pointer([*path, "$ref"])
    return ""
