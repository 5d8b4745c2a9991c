"""The schema registry: event schemas checked, compiled once per ($id, version), looked up fast.

Loading is strict and exhaustive: every file is read, every rule (docs/schemas.md) is checked and
every problem is collected before `SchemaLoadError` is raised, so an operator fixes a folder of
schemas in one pass instead of one error per restart. After loading, the daemon's hot path only
calls `SchemaRegistry.get`, two dict lookups.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.resources
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import fastjsonschema
import jsonschema_specifications
import yaml

from telemetryd.core.record import record_head

SCHEMA_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
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
_VERSION_CHUNKS = re.compile(r"([0-9]+)")
_DRAFT7 = "http://json-schema.org/draft-07/schema#"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


@functools.cache
def _metaschema_check() -> Callable[[Any], Any]:
    """Draft 7's metaschema compiled by fastjsonschema: the quick yes for a good schema.

    jsonschema reports every problem with its path, but importing it costs over a second where
    its format checkers pull in rfc3987_syntax; it is imported only to explain a bad schema.
    """
    meta = jsonschema_specifications.REGISTRY.contents(_DRAFT7)
    # use_default=False: the metaschema's defaults must not be written into the checked schema.
    check: Callable[[Any], Any] = fastjsonschema.compile(
        meta, handlers=_NO_FETCH, use_formats=False, use_default=False
    )
    return check


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


@dataclass(frozen=True, slots=True)
class PropertyInfo:
    """A top-level property as shown to people (`schemas show`, GET /api/schemas)."""

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

    def properties(self) -> list[PropertyInfo]:
        props = self.schema.get("properties")
        if not isinstance(props, dict):
            return []
        required = self.schema.get("required")
        required_names = set(required) if isinstance(required, list) else set()
        return [_property_info(name, spec, name in required_names) for name, spec in props.items()]


def _property_info(name: str, spec: Any, required: bool) -> PropertyInfo:
    spec = spec if isinstance(spec, dict) else {}
    categories = spec.get("categories")
    return PropertyInfo(
        name=name,
        title=_text(spec.get("title")),
        description=_text(spec.get("description")),
        type=_type_of(spec),
        categories=list(categories) if isinstance(categories, list) else [],
        required=required,
    )


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _json_type(value: Any) -> str:
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
        return "|".join(dict.fromkeys(_json_type(v) for v in values))
    return "any"


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders versions as people read them: "2" < "10", "1.9" < "1.10"."""
    return tuple(
        (0, int(chunk), "") if chunk.isascii() and chunk.isdigit() else (1, 0, chunk)
        for chunk in _VERSION_CHUNKS.split(version)
        if chunk
    )


# --- reading files ----------------------------------------------------------------------------


def builtin_schema_dir() -> Path:
    """The schemas shipped with telemetryd (the repository's schemas/ folder, as package data)."""
    root = importlib.resources.files("telemetryd.schemas")
    # A regular (non-zipped) install gives a Path; anything else still has a filesystem str().
    return root if isinstance(root, Path) else Path(str(root))


def schema_files(path: Path) -> list[Path]:
    """The schema files under a folder (recursive, sorted, hidden entries skipped) or the file."""
    if not path.is_dir():
        return [path]
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(path):
        # Editors' and Jupyter's hidden folders (.ipynb_checkpoints) hold stale copies.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(folder, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in SCHEMA_SUFFIXES
        )
    return sorted(found)


def load_documents(path: Path) -> list[tuple[str, Any]]:
    """Parse a schema file (or every schema file in a folder) into (file name, document) pairs.

    Raises SchemaLoadError naming each file that cannot be read or parsed, with the line and
    column of a syntax error.
    """
    if not path.exists():
        raise SchemaLoadError([SchemaProblem(str(path), "", "no such file or folder")])
    documents: list[tuple[str, Any]] = []
    problems: list[SchemaProblem] = []
    for file in schema_files(path):
        try:
            documents.append((str(file), _parse_file(file)))
        except _ParseError as e:
            problems.append(SchemaProblem(str(file), "", str(e)))
    if problems:
        raise SchemaLoadError(problems)
    return documents


class _ParseError(Exception):
    pass


def _parse_file(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise _ParseError(f"cannot read the file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise _ParseError(f"not UTF-8 text (byte {e.start}): {e.reason}") from None
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise _ParseError(
                f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _ParseError(f"not valid YAML: {e.problem or e.context}{where}") from None
    except yaml.YAMLError as e:
        raise _ParseError(f"not valid YAML: {e}") from None


# --- the rules ----------------------------------------------------------------------------------


def json_pointer(path: Sequence[str | int]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def check_schema(doc: Any, file: str) -> list[SchemaProblem]:
    """Every way `doc` breaks the schema rules (docs/schemas.md); compiling is not attempted."""
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else _a(_json_type(doc))
        return [SchemaProblem(file, "", f"a schema must be a JSON object (a mapping), got {got}")]
    problems = _non_json_values(doc, file)
    problems += _metaschema_problems(doc, file)
    # A pointer the metaschema already explained needs no second, vaguer problem from our rules.
    explained = {p.pointer for p in problems}
    problems += [p for p in _rule_problems(doc, file) if p.pointer not in explained]
    return problems


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
        reasons += _check_categories(props, ["properties"])
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
        return [("/$id", f"must be a string (an absolute URI), got {_a(_json_type(schema_id))}")]
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


def _check_categories(props: dict[Any, Any], path: list[str | int]) -> list[tuple[str, str]]:
    """Categories drive the privacy policy, so a typo'd shape must fail, not silently redact."""
    reasons: list[tuple[str, str]] = []
    for name, spec in props.items():
        if not isinstance(spec, dict):
            continue
        here = [*path, str(name)]
        categories = spec.get("categories")
        if "categories" in spec:
            if not isinstance(categories, list):
                reasons.append(
                    (json_pointer([*here, "categories"]), "must be a list of category names")
                )
            else:
                reasons += [
                    (
                        json_pointer([*here, "categories", i]),
                        "must be a non-empty string such as "
                        + ", ".join(repr(c) for c in KNOWN_CATEGORIES),
                    )
                    for i, category in enumerate(categories)
                    if not isinstance(category, str) or not category.strip()
                ]
        nested = spec.get("properties")
        if isinstance(nested, dict):
            reasons += _check_categories(nested, [*here, "properties"])
    return reasons


# --- compiling ----------------------------------------------------------------------------------


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


_NO_FETCH = _NoFetch()


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
            copy.deepcopy(doc), handlers=_NO_FETCH, use_default=False
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


def compile_schemas(
    paths: Sequence[Path] = (), *, builtin: bool = False, allowed: Sequence[str] = ()
) -> tuple[list[CompiledSchema], list[SchemaProblem]]:
    """Check and compile every schema under `paths` without raising.

    Returns every good schema in load order (an identical duplicate appears once per file, so a
    caller can report each file) and every problem. A document with the same ($id, version) as
    an earlier one but different content is a problem, and left out.
    """
    is_allowed = _AllowList(allowed)
    roots = ([builtin_schema_dir()] if builtin else []) + list(paths)
    compiled: list[CompiledSchema] = []
    problems: list[SchemaProblem] = []
    first: dict[tuple[str, str], tuple[str, str]] = {}  # key -> (canonical JSON, file)
    for root in roots:
        if not root.exists():
            problems.append(SchemaProblem(str(root), "", "no such file or folder"))
            continue
        for file in schema_files(root):
            try:
                documents = load_documents(file)
            except SchemaLoadError as e:
                problems += e.problems
                continue
            for name, doc in documents:
                result = _compile_one(doc, name, is_allowed, first)
                if isinstance(result, CompiledSchema):
                    compiled.append(result)
                else:
                    problems += result
    return compiled, problems


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
    validate = compile_validator(doc, file)
    if isinstance(validate, SchemaProblem):
        return [validate]
    personal_data = doc.get("personal-data")
    return CompiledSchema(
        schema_id=schema_id,
        version=version,
        title=_text(doc.get("title")),
        description=_text(doc.get("description")),
        schema=doc,
        source=file,
        validate=validate,
        allowed=is_allowed(schema_id),
        record_head=record_head(schema_id, version),
        personal_data=personal_data if isinstance(personal_data, bool) else None,
        open_keys=not (doc.get("additionalProperties") is False and "patternProperties" not in doc),
        declared_keys=frozenset(doc.get("properties", {})),
    )


_NO_VERSIONS: dict[str, CompiledSchema] = {}


@dataclass(slots=True)
class SchemaRegistry:
    """Every registered schema by id and version; several versions of an id coexist."""

    _by_id: dict[str, dict[str, CompiledSchema]] = field(default_factory=dict)

    @classmethod
    def load(
        cls, paths: Sequence[Path] = (), *, builtin: bool = True, allowed: Sequence[str] = ()
    ) -> SchemaRegistry:
        """Load the shipped schemas (if `builtin`) and those under `paths`.

        Raises SchemaLoadError with every problem in every file.
        """
        compiled, problems = compile_schemas(paths, builtin=builtin, allowed=allowed)
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
