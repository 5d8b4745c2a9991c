"""Finding schema files and parsing them (YAML or JSON) into documents, every failure reported."""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from telemetryd.core.schemas.model import SchemaLoadError, SchemaProblem

SCHEMA_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


def builtin_schema_dir() -> Path:
    """The schemas shipped with telemetryd (the repository's schemas/ folder, as package data)."""
    return _package_dir("telemetryd.schemas")


def builtin_overlay_dir() -> Path:
    """The category overlays shipped for those schemas (package data of its own, as every file
    under the schemas folder is loaded as a schema)."""
    return _package_dir("telemetryd.category_overlays")


def _package_dir(package: str) -> Path:
    root = importlib.resources.files(package)
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


def documents_under(
    roots: Sequence[Path], problems: list[SchemaProblem]
) -> Iterator[tuple[str, Any]]:
    """(name, document) of every file under `roots` (folders recursively); a root that does
    not exist and a file that cannot be read or parsed are added to `problems`."""
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
            yield from documents


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
