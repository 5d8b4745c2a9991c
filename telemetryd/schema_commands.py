"""`telemetryd schemas list|validate|show`: what the daemon would register, and why not."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: building the CLI's parser must need no pydantic
    from telemetryd.core.schemas.model import CompiledSchema
    from telemetryd.core.schemas.registry import SchemaRegistry

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schemas = subparsers.add_parser(
        "schemas",
        help="list, check and describe event schemas",
        description="List, check and describe the event schemas telemetryd validates against.",
    )
    schemas.add_argument(*_CONFIG_FLAGS, **_config_option(argparse.SUPPRESS))
    schemas.set_defaults(func=_usage(schemas), config=None)
    commands = schemas.add_subparsers(title="commands", metavar="COMMAND")
    # -c is accepted before and after the command; SUPPRESS keeps an absent one from resetting it.
    config_parent = argparse.ArgumentParser(add_help=False)
    config_parent.add_argument(*_CONFIG_FLAGS, **_config_option(argparse.SUPPRESS))

    listing = commands.add_parser(
        "list",
        parents=[config_parent],
        help="the registered schemas",
        description="One row per registered schema id and version.",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(func=cmd_list)

    validate = commands.add_parser(
        "validate",
        help="check schema files without loading the configuration",
        description="Check schema files and folders with the rules the daemon applies at load.",
    )
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    validate.set_defaults(func=cmd_validate)

    show = commands.add_parser(
        "show",
        parents=[config_parent],
        help="describe one schema: what its events carry",
        description="Describe one schema; without VERSION, its highest version.",
    )
    show.add_argument("schema_id", metavar="ID", help="the schema's $id")
    show.add_argument("version", nargs="?", metavar="VERSION")
    show.add_argument("--json", action="store_true", help="print the schema document")
    show.set_defaults(func=cmd_show)


_CONFIG_FLAGS = ("-c", "--config")


def _config_option(default: Any) -> dict[str, Any]:
    return {
        "type": Path,
        "metavar": "FILE",
        "default": default,
        "help": "configuration file (default: $TELEMETRYD_CONFIG, ./telemetryd.toml or "
        "/etc/telemetryd/telemetryd.toml; built-in schemas only when none exists)",
    }


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show_usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG

    return show_usage


def _load_registry(args: argparse.Namespace) -> SchemaRegistry | int:
    """The registry the daemon would build from the configuration, or an exit code."""
    from telemetryd.config import ConfigError, default_config_path, load_config
    from telemetryd.core.schemas.model import SchemaLoadError
    from telemetryd.core.schemas.registry import SchemaRegistry

    path: Path | None = args.config
    # Only the implicit ./telemetryd.toml may be absent; a file the user named must exist.
    explicit = path is not None or bool(os.environ.get("TELEMETRYD_CONFIG"))
    path = path or default_config_path()
    try:
        if explicit or path.exists():
            settings = load_config(path).schemas
            return SchemaRegistry.load(
                settings.paths,
                builtin=settings.builtin,
                allowed=settings.allowed,
                overlays=settings.overlays,
                builtin_overlays=settings.builtin_overlays,
            )
        return SchemaRegistry.load()
    except ConfigError as e:
        print(e, file=sys.stderr)
    except SchemaLoadError as e:
        print(e, file=sys.stderr)
    return EXIT_CONFIG


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def _summary(schema: CompiledSchema) -> dict[str, Any]:
    return {
        "id": schema.schema_id,
        "version": schema.version,
        "title": schema.title,
        "allowed": schema.allowed,
        "personal_data": schema.personal_data,
        "source": schema.source,
    }


def cmd_list(args: argparse.Namespace) -> int:
    registry = _load_registry(args)
    if isinstance(registry, int):
        return registry
    if args.json:
        print(json.dumps([_summary(s) for s in registry], indent=2))
        return EXIT_OK
    rows = [("ID", "VERSION", "TITLE", "ALLOWED", "SOURCE")]
    rows += [
        (s.schema_id, s.version, s.title, "yes" if s.allowed else "no", s.source) for s in registry
    ]
    print(_table(rows))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from telemetryd.core.schemas.registry import compile_schemas

    compiled, problems = compile_schemas(args.paths, builtin=False)
    for schema in compiled:
        print(f"OK {schema.source} {schema.schema_id} v{schema.version}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not compiled and not problems:
        print("no schema files (*.yaml, *.yml, *.json) found", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if problems else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    registry = _load_registry(args)
    if isinstance(registry, int):
        return registry
    versions = registry.versions(args.schema_id)
    if not versions:
        print(_unknown_id(args.schema_id, registry), file=sys.stderr)
        return EXIT_FAILED
    version = args.version if args.version is not None else versions[-1]
    schema = registry.get(args.schema_id, version)
    if schema is None:
        print(
            f"{args.schema_id} has no version {version!r}; known versions: {', '.join(versions)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.json:
        print(json.dumps(schema.schema, indent=2, ensure_ascii=False))
    else:
        print(_describe(schema, versions))
    return EXIT_OK


def _unknown_id(schema_id: str, registry: SchemaRegistry) -> str:
    known = registry.schema_ids()
    close = difflib.get_close_matches(schema_id, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    listing = "".join(f"\n  {i} (versions {', '.join(registry.versions(i))})" for i in known)
    return f"no schema with id {schema_id!r}{hint}\nknown schemas:{listing or ' none'}"


def _describe(schema: CompiledSchema, versions: list[str]) -> str:
    from telemetryd.core.schemas.model import json_pointer

    personal = {True: "yes", False: "no", None: "not declared"}[schema.personal_data]
    lines = [
        f"{schema.schema_id} version {schema.version}",
        f"title:          {schema.title or '(none)'}",
        f"versions:       {', '.join(versions)}",
        f"personal data:  {personal}",
        f"allowed:        {'yes' if schema.allowed else 'no'}",
        f"source:         {schema.source}",
    ]
    if schema.description:
        lines += ["", *schema.description.splitlines()]
    properties = schema.properties()
    categories = _categories_by_pointer(schema)
    if properties:
        rows = [("PROPERTY", "TYPE", "REQUIRED", "CATEGORIES", "DESCRIPTION")]
        rows += [
            (
                p.name,
                p.type,
                "yes" if p.required else "no",
                categories.get(json_pointer([p.name]), "-"),
                _first_line(p.title or p.description),
            )
            for p in properties
        ]
        lines += ["", _table(rows)]
    if categories:
        lines += [
            "",
            "Categories at every depth, by JSON pointer into the event's data (* for every item",
            "of an array; (overlay) marks a category that a category overlay gives):",
            _table([("POINTER", "CATEGORIES"), *categories.items()]),
        ]
    return "\n".join(lines)


def _categories_by_pointer(schema: CompiledSchema) -> dict[str, str]:
    """Data pointer → its categories as text, those only an overlay gives marked (overlay)."""
    from telemetryd.core.schemas.categories import category_map

    own = category_map(schema.schema)
    return {
        pointer: ", ".join(
            name if name in own.get(pointer, ()) else f"{name} (overlay)" for name in names
        )
        for pointer, names in schema.categories.items()
    }


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
