"""The configuration reference, generated from the settings models.

Every key's type, default and description live once, in the pydantic models (telemetryd.config
and each shipped sink's settings); `telemetryd config-reference` renders them as Markdown for
docs/configuration-reference.md, and a test fails when that page or the default configuration
file drifts from the models.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from telemetryd.config import (
    AuthSettings,
    JupyterHubSettings,
    LogSettings,
    PioneerSettings,
    SchemaSettings,
    ServerSettings,
    TokenSettings,
)
from telemetryd.plugins import ENTRY_POINT_GROUP
from telemetryd.settings_types import octal_mode
from telemetryd.sink import Sink, SinkSettings

#: The configuration file's tables, in the order the reference gives them.
SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("server", ServerSettings),
    ("schemas", SchemaSettings),
    ("log", LogSettings),
    ("auth", AuthSettings),
    ("auth.tokens", TokenSettings),
    ("auth.jupyterhub", JupyterHubSettings),
    ("pioneer", PioneerSettings),
)

#: Keys whose value is a table of its own, documented as a section of its own.
_SUBTABLES = frozenset({("auth", "tokens"), ("auth", "jupyterhub")})


def shipped_sinks() -> list[tuple[str, type[Sink]]]:
    """The sink types telemetryd itself ships (not third-party plugins), by name."""
    shipped = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is None or ep.dist.name != "telemetryd":
            continue
        try:
            cls = ep.load()
        except ImportError:  # its client library is an extra that is not installed
            continue
        shipped.append((ep.name, cls))
    return sorted(shipped)


def own_fields(model: type[BaseModel], base: type[BaseModel] | None) -> Iterator[str]:
    """The model's keys, without those it inherits from `base`."""
    inherited = set(base.model_fields) if base is not None else set()
    for name in model.model_fields:
        if name not in inherited:
            yield name


def type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f'`"{value}"`' for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        text = " \\| ".join(type_text(arg) for arg in members)
        return text + " (optional)" if len(members) < len(get_args(annotation)) else text
    if origin in (list, tuple):
        items = get_args(annotation)
        return f"list of {type_text(items[0])}" if items else "list"
    if origin is dict:
        return "table"
    if annotation is SecretStr:
        return "string (secret)"
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, int):
            return "integer"
        if issubclass(annotation, float):
            return "number"
        if issubclass(annotation, str | Path):
            return "string"
        if issubclass(annotation, Enum):
            return " \\| ".join(f'`"{member.value}"`' for member in annotation)
        if issubclass(annotation, BaseModel):
            return "table"
        return annotation.__name__
    # Annotated aliases of the settings (FileMode, GroupName, ...): their underlying type.
    metadata_origin = getattr(annotation, "__origin__", None)
    if metadata_origin is not None:
        return type_text(metadata_origin)
    return str(annotation)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if is_file_mode(field):
        return f"`{value:#o}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, list | tuple) and not value:
        return "`[]`"
    if isinstance(value, BaseModel):
        return "see its table"
    return f"`{value!r}`"


def is_file_mode(field: FieldInfo) -> bool:
    return any(
        isinstance(meta, BeforeValidator) and meta.func is octal_mode for meta in field.metadata
    )


def table(model: type[BaseModel], base: type[BaseModel] | None, section: str) -> list[str]:
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name in own_fields(model, base):
        if (section, name) in _SUBTABLES:
            continue
        field = model.model_fields[name]
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = 'file mode (0o640 or "0640")' if is_file_mode(field) else type_text(field.annotation)
        lines.append(f"| `{name}` | {kind} | {default_text(field)} | {description} |")
    return lines


def render_markdown() -> str:
    """The whole reference page."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the settings models by `telemetryd config-reference`; do not edit by",
        "hand. Every key is optional unless its default says *required*. Relative paths are",
        "relative to the daemon's working directory.",
        "",
    ]
    for section, model in SECTIONS:
        heading = f"[[{section}]]" if section == "auth.tokens" else f"[{section}]"
        out += [f"## `{heading}`", "", *table(model, None, section), ""]
    out += [
        "## Sinks: `[[sinks]]` and `[dead_letter]`",
        "",
        "Keys every sink takes, whatever its `type`:",
        "",
        *table(SinkSettings, None, "sinks"),
        "",
    ]
    for name, cls in shipped_sinks():
        model = cls.settings_model
        own = list(own_fields(model, SinkSettings))
        out += [f'### `type = "{name}"`', ""]
        if own:
            out += [*table(model, SinkSettings, "sinks"), ""]
        else:
            out += ["No keys of its own.", ""]
    return "\n".join(out).rstrip() + "\n"


def section_keys() -> dict[str, list[str]]:
    """The keys of each top-level table, for checks of the default configuration file."""
    return {
        section: [name for name in model.model_fields if (section, name) not in _SUBTABLES]
        for section, model in SECTIONS
    }


# -- the default configuration file ----------------------------------------------------------

#: Where telemetryd.toml differs from the models' defaults, so that it runs as it is from a
#: checkout with the HTTP API on.
DEFAULT_FILE_VALUES: dict[tuple[str, str], Any] = {("server", "http"): "127.0.0.1:8765"}

#: Values shown (commented out) for keys whose default is unset or empty.
EXAMPLES: dict[tuple[str, str], Any] = {
    ("server", "unix_socket_group"): "jupyter",
    ("server", "http_unix_socket"): "run/telemetryd-http.sock",
    ("schemas", "paths"): ["/etc/telemetryd/schemas"],
    ("schemas", "allowed"): ["https://events.jupyter.org/*"],
    ("schemas", "overlays"): ["/etc/telemetryd/overlays"],
    ("auth.tokens", "identity"): "jupyterhub",
    ("auth.tokens", "hash"): "sha256:<from telemetryd hash-token>",
    ("auth.tokens", "allowed_schemas"): ["https://events.jupyter.org/jupyterhub/*"],
    ("auth.jupyterhub", "api_url"): "http://127.0.0.1:8081/hub/api",
    ("auth.jupyterhub", "allowed_users"): ["alice"],
    ("auth.jupyterhub", "allowed_groups"): ["researchers"],
    ("auth.jupyterhub", "access_scopes"): ["access:services!service=telemetryd"],
    ("auth.jupyterhub", "allowed_schemas"): ["https://events.jupyter.org/*"],
}

#: Tables that are off unless written: shown whole, commented out.
_COMMENTED_TABLES = frozenset({"auth.tokens", "auth.jupyterhub"})

#: The sinks of the default file: hand-chosen, so kept as text (every sink key is in the
#: reference page: `telemetryd config-reference`).
SINKS_TEXT = """\
# Sinks: where records go. Every key of every sink type: `telemetryd config-reference`.
[[sinks]]
name = "archive"
type = "file"
path = "var/events/events.jsonl"
rotate_bytes = 104857600            # 100 MiB per file
fsync = "interval"
file_mode = 0o640                   # who may read the records: the daemon's user and group
# group = "telemetryd-readers"      # the files' group (default: the daemon's)
when_full = "block"                 # push back on clients rather than lose events

[dead_letter]                       # every rejected input, with its reason
name = "dead-letter"
type = "file"
path = "var/events/rejected.jsonl"
when_full = "drop_newest"           # garbage must never slow down valid events
"""


def toml_value(value: Any, *, mode: bool = False) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        value = value.value
    if mode and isinstance(value, int):
        return f"{value:#o}"
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


def _comment(text: str, width: int = 98) -> list[str]:
    """`text` as comment lines of at most `width` characters."""
    lines: list[str] = []
    line = "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width and line != "#":
            lines.append(line)
            line = "#"
        line += " " + word
    if line != "#":
        lines.append(line)
    return lines


def _default_value(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def render_default_config() -> str:
    """telemetryd.toml: every key of every table, with its meaning; it runs as it is."""
    out = [
        "# telemetryd's default configuration, generated from the settings models by",
        "# `telemetryd config-reference --toml` (edit the models' descriptions, not this file).",
        "# It runs as it is from a checkout (`make run`), keeping its socket and files under the",
        "# working directory. Every key is optional; a key commented out is unset (or an",
        "# example), and every other value is the default unless a comment says otherwise.",
    ]
    for section, model in SECTIONS:
        commented = section in _COMMENTED_TABLES
        heading = f"[[{section}]]" if section == "auth.tokens" else f"[{section}]"
        out += ["", f"# {heading}" if commented else heading]
        for name in model.model_fields:
            if (section, name) in _SUBTABLES:
                continue
            field = model.model_fields[name]
            out += _comment(field.description or "")
            value = DEFAULT_FILE_VALUES.get((section, name), _default_value(field))
            example = EXAMPLES.get((section, name))
            shown = example if example is not None else value
            line = f"{name} = {toml_value(shown, mode=is_file_mode(field))}"
            if (section, name) in DEFAULT_FILE_VALUES:
                line += f"  # default: {toml_value(_default_value(field))}"
            off = commented or shown is None or example is not None
            out.append(f"# {line}" if off else line)
    out += ["", SINKS_TEXT]
    return "\n".join(out).rstrip() + "\n"
