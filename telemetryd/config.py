"""telemetryd.toml: parsed with tomllib, validated by pydantic models, unknown keys rejected.

Relative paths in the file are resolved against the working directory, as a systemd unit's
WorkingDirectory or StateDirectory sets it, so the repository's telemetryd.toml keeps its socket
and files under the checkout.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from telemetryd.plugins import SinkUnavailable, UnknownSinkType, load_sink_class
from telemetryd.settings_types import FileMode, GroupName
from telemetryd.sink import SinkSettings

DEFAULT_CONFIG_PATHS = (Path("telemetryd.toml"), Path("/etc/telemetryd/telemetryd.toml"))
KiB = 1024
MiB = 1024 * 1024


def parse_host_port(address: str) -> tuple[str, int]:
    """`"host:port"` (IPv6 as `"[::1]:8765"`) as (host, port); raises ValueError."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError('expected "host:port", such as "127.0.0.1:8765"')
    number = int(port)
    if number > 65535:
        raise ValueError(f"port {number} is over 65535")
    return host, number


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    unix_socket: Path | None = Field(
        Path("run/telemetryd.sock"), description="Path of the NDJSON ingest socket."
    )
    unix_socket_mode: FileMode = Field(
        0o660, description="File mode of the socket (TOML 0o660 or '0660')."
    )
    unix_socket_group: GroupName | None = Field(
        None,
        description="Group of the socket files (unix_socket, http_unix_socket), by name or "
        "number: with mode 0o660, who may send. The daemon's user must be a member. Unset: the "
        "daemon's own group.",
    )
    max_line_bytes: int = Field(1 * MiB, gt=0, description="Longest accepted event line.")
    read_chunk_bytes: int = Field(256 * 1024, ge=4096, description="Bytes read per receive.")
    read_budget_bytes: int = Field(
        32 * MiB,
        ge=64 * KiB,
        description="Bytes all clients together (socket reads, HTTP bodies) may hold between "
        "reading them and handing their records to the sinks' queues; when it is spent, they "
        "wait their turn (first come, first served) and socket clients' writes block.",
    )
    max_connections: int = Field(1024, gt=0, description="Concurrent socket clients.")
    shutdown_timeout_secs: float = Field(
        30.0, ge=0, description="How long SIGTERM waits for the sinks to drain their queues."
    )
    http: str = Field(
        "",
        description='Address of the HTTP API, "host:port" ("[::1]:8765" for IPv6; port 0 picks '
        'a free port, logged in the "listening" line); "" turns the HTTP API off.',
    )
    http_unix_socket: Path | None = Field(
        None,
        description="Also serve the HTTP API on this Unix socket (mode unix_socket_mode); "
        "records sent through it carry the peer's uid, gid, pid and user in __origin__.",
    )
    http_max_header_bytes: int = Field(
        16 * KiB,
        ge=1024,
        description="Longest request line and headers of an HTTP request; more is answered 431.",
    )
    http_max_body_bytes: int = Field(
        16 * MiB, gt=0, description="Largest HTTP request body; more is answered 413."
    )
    http_idle_timeout_secs: float = Field(
        30.0,
        gt=0,
        description="An HTTP connection that sends nothing for this long is closed (a request "
        "left unfinished is answered 408).",
    )
    http_head_timeout_secs: float = Field(
        10.0,
        gt=0,
        description="A request line and headers must arrive whole within this long (from the "
        "connection, or from the first byte of a keep-alive connection's next request); "
        "else 408 and close, however often bytes trickle in.",
    )
    http_min_body_rate_bytes: int = Field(
        1024,
        ge=0,
        description="After a grace of http_head_timeout_secs, a body must arrive at this many "
        "bytes per second on average; slower is answered 408 and closed. 0: no minimum.",
    )
    http_max_connections: int = Field(
        1024,
        gt=0,
        description="Concurrent HTTP connections. A new one past it closes the connection idle "
        "longest (keep-alive between requests, then the oldest unfinished head) to make room; "
        "only when every one is busy with a request is it answered 503 and closed.",
    )
    http_enqueue_timeout_secs: float = Field(
        5.0,
        gt=0,
        description="How long an HTTP request waits for room in full `block` queues before it is "
        "answered 503 with Retry-After (its events not accepted).",
    )
    http_max_waiting_requests: int = Field(
        32,
        ge=0,
        description="HTTP requests that may wait at once for room in full `block` queues; one "
        "more is answered 429 with Retry-After at once (its events not accepted).",
    )
    subscribe_max_subscribers: int = Field(
        16,
        ge=0,
        description="Live subscribers (GET /api/events/subscribe) served at once; more are "
        "answered 503. 0 turns subscriptions off.",
    )
    subscribe_queue_events: int = Field(
        10_000,
        gt=0,
        description="Records a subscriber may have waiting; past it (or subscribe_queue_bytes) "
        "its new records are dropped, counted and announced to it.",
    )
    subscribe_queue_bytes: int = Field(
        16 * MiB, gt=0, description="Bytes of records a subscriber may have waiting."
    )
    subscribe_keepalive_secs: float = Field(
        15.0,
        gt=0,
        description="A quiet subscription gets a keep-alive (an SSE comment, a WebSocket ping) "
        "this often, so proxies keep it open and a gone client is noticed.",
    )

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value


class SchemaSettings(_Section):
    builtin: bool = Field(True, description="Load the schemas shipped with telemetryd.")
    paths: list[Path] = Field(
        default_factory=list, description="More folders (or files) of YAML/JSON schemas."
    )
    allowed: list[str] = Field(
        default_factory=list,
        description="Schema id glob patterns accepted for ingest; empty accepts all registered.",
    )
    builtin_overlays: bool = Field(
        True,
        description="Add the privacy categories telemetryd ships for the shipped schemas that "
        "carry none (Jupyter Server's and JupyterHub's); applies when builtin is on.",
    )
    overlays: list[Path] = Field(
        default_factory=list,
        description="More folders (or files) of category overlays: YAML/JSON files adding "
        "privacy categories to a loaded schema's properties, for schemas you do not own.",
    )


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The least severe messages logged."
    )
    format: Literal["json", "text"] = Field(
        "json",
        description="json: one JSON object a line (for journald and log shippers); text: for "
        "people at a terminal.",
    )
    stats_interval_secs: float = Field(
        60.0, ge=0, description="Log every component's counters this often; 0 turns it off."
    )


class TokenSettings(_Section):
    identity: str = Field(
        min_length=1, description="Who the token speaks for: the records' `__origin__.user`."
    )
    hash: str = Field(
        description='"sha256:<hex>" of the token (`telemetryd hash-token`), never the token.'
    )
    allowed_schemas: list[str] = Field(
        default_factory=list,
        description="Schema id glob patterns this token may send; empty allows all.",
    )

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise ValueError(
                'expected "sha256:" and 64 lower-case hex digits, as `telemetryd hash-token` '
                "prints it"
            )
        return value


class PioneerSettings(_Section):
    enabled: bool = Field(
        False,
        description="Serve POST /api/pioneer. It takes notebook contents: it needs "
        "auth.required = true, or allow_anonymous = true.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Serve POST /api/pioneer while auth.required is false: whoever can reach "
        "the HTTP API may post notebook contents.",
    )
    keep_environ: bool = Field(
        False,
        description="Keep NotebookOpenEvent's eventInfo.environ, the Jupyter server's whole "
        "environment (secrets included); by default it is removed before validation.",
    )


class JupyterHubSettings(_Section):
    """[auth.jupyterhub]: JupyterHub vouches for the tokens that are none of [[auth.tokens]]."""

    api_url: str = Field(
        "",
        validate_default=True,
        description='JupyterHub\'s REST API, such as "http://127.0.0.1:8081/hub/api"; empty: '
        "$JUPYTERHUB_API_URL (which JupyterHub sets for the services it starts). A token is "
        "checked with GET {api_url}/user, sending the token itself: telemetryd needs no token "
        "of its own.",
    )
    cache_secs: float = Field(
        60.0,
        ge=0,
        description="How long the hub's answer about a valid token is kept (a token revoked in "
        "the hub works this much longer; a SIGHUP empties the cache); 0: ask every time.",
    )
    negative_cache_secs: float = Field(
        5.0,
        ge=0,
        description="How long a token the hub refused is answered 403 without asking again.",
    )
    timeout_secs: float = Field(
        5.0,
        gt=0,
        description="How long a request waits for the hub's answer (its turn and the call); "
        "then it is answered 503 with Retry-After, never let through.",
    )
    max_concurrent_requests: int = Field(
        8,
        gt=0,
        description="Calls to the hub in flight at once; requests sending one token at the "
        "same time share one call.",
    )
    kinds: list[Literal["user", "service"]] = Field(
        ["user"],
        min_length=1,
        description='Whose tokens are accepted: "user", "service" (a service\'s records carry '
        '__origin__.kind = "service").',
    )
    allowed_users: list[str] = Field(
        default_factory=list,
        description="Hub users accepted; with allowed_groups, a user in either is; both empty: "
        "every user.",
    )
    allowed_groups: list[str] = Field(
        default_factory=list, description="Hub groups whose members are accepted."
    )
    access_scopes: list[str] = Field(
        default_factory=list,
        description="The token must hold one of these scopes, such as "
        '"access:services!service=telemetryd" (as HubAuth.access_scopes); empty: any token.',
    )
    allowed_schemas: list[str] = Field(
        default_factory=list,
        description="Schema id glob patterns hub-verified tokens may send; empty allows all.",
    )

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        value = value or os.environ.get("JUPYTERHUB_API_URL", "")
        if not value:
            raise ValueError(
                'no JupyterHub API URL: set api_url, such as "http://127.0.0.1:8081/hub/api", '
                "or $JUPYTERHUB_API_URL"
            )
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                'expected an http:// or https:// URL, such as "http://127.0.0.1:8081/hub/api"'
            )
        if parts.query or parts.fragment:
            raise ValueError("expected the API's URL without a query or fragment")
        return value.rstrip("/")


class AuthSettings(_Section):
    required: bool = Field(False, description="Ingest endpoints need a valid token.")
    protect_health: bool = Field(False, description="/healthz and /readyz need a valid token.")
    protect_metrics: bool = Field(False, description="/metrics needs a valid token.")
    tokens: list[TokenSettings] = Field(
        default_factory=list, description="The accepted tokens ([[auth.tokens]])."
    )
    jupyterhub: JupyterHubSettings | None = Field(
        None,
        description="Tokens that are none of [[auth.tokens]] are checked with JupyterHub "
        "([auth.jupyterhub]); the hub's user name is the records' __origin__.user.",
    )

    @model_validator(mode="after")
    def _check_tokens(self) -> AuthSettings:
        wanted = [
            key for key in ("required", "protect_health", "protect_metrics") if getattr(self, key)
        ]
        if wanted and not self.tokens and self.jupyterhub is None:
            raise ValueError(
                f"{', '.join(f'auth.{key}' for key in wanted)} is true but neither "
                "[[auth.tokens]] nor [auth.jupyterhub] is configured: no request could pass"
            )
        seen: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            if token.hash in seen:
                raise ValueError(
                    f"auth.tokens[{i}].hash is the same as auth.tokens[{seen[token.hash]}].hash"
                )
            seen[token.hash] = i
        return self


def _default_dead_letter() -> dict[str, Any]:
    return {
        "name": "dead-letter",
        "type": "file",
        "path": "var/events/rejected.jsonl",
        "when_full": "drop_newest",
    }


class _RawConfig(_Section):
    """The file as written; sink tables are validated in a second step by their plugin's model."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    schemas: SchemaSettings = Field(default_factory=SchemaSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    pioneer: PioneerSettings = Field(default_factory=PioneerSettings)
    sinks: list[dict[str, Any]] = Field(default_factory=list)
    dead_letter: dict[str, Any] = Field(default_factory=_default_dead_letter)


class Config(_Section):
    source: Path | None = None
    server: ServerSettings
    schemas: SchemaSettings
    log: LogSettings
    auth: AuthSettings = Field(default_factory=AuthSettings)
    pioneer: PioneerSettings = Field(default_factory=PioneerSettings)
    sinks: list[SinkSettings]
    dead_letter: SinkSettings


class ConfigError(Exception):
    """Bad configuration: one line per problem, each naming the file and the key."""

    def __init__(self, source: Path | str, problems: list[tuple[str, str]]) -> None:
        self.source = str(source)
        self.problems = problems
        super().__init__(
            "\n".join(
                f"{self.source}: {key}: {problem}" if key else f"{self.source}: {problem}"
                for key, problem in problems
            )
        )


def _key_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems(err: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        key = _key_path(tuple(e["loc"]), prefix)
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        # A whole table is not echoed: it may hold a password or token beside the bad key.
        if e["type"] not in ("extra_forbidden", "missing") and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        problems.append((key, msg))
    return problems


def _sink_settings(
    table: dict[str, Any], key: str
) -> tuple[SinkSettings | None, list[tuple[str, str]]]:
    sink_type = table.get("type")
    if not isinstance(sink_type, str):
        return None, [(f"{key}.type", 'missing: every sink needs a type, such as "file"')]
    try:
        cls = load_sink_class(sink_type)
    except (UnknownSinkType, SinkUnavailable) as e:
        return None, [(f"{key}.type", str(e))]
    try:
        settings = cls.settings_model.model_validate(table)
    except ValidationError as e:
        return None, _problems(e, key)
    if settings.batches_in_flight > 1 and not cls.concurrent_batches:
        return None, [
            (
                f"{key}.batches_in_flight",
                f"the {sink_type} sink writes one batch at a time (it keeps their order); "
                "only sinks that allow it (http, postgres) take more than 1",
            )
        ]
    return settings, []


def _sink_table_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The sink tables' own problems, so that they are reported with the rest of the file's."""
    tables: list[tuple[str, Any]] = [("dead_letter", data.get("dead_letter"))]
    sinks = data.get("sinks")
    if isinstance(sinks, list):
        tables += [(f"sinks[{i}]", table) for i, table in enumerate(sinks)]
    problems: list[tuple[str, str]] = []
    for key, table in tables:
        if isinstance(table, dict):
            problems += _sink_settings(table, key)[1]
    return problems


def _pioneer_problems(pioneer: PioneerSettings, auth: AuthSettings) -> list[tuple[str, str]]:
    """An open POST /api/pioneer takes notebooks from anyone: only when the operator says so."""
    if not pioneer.enabled or auth.required or pioneer.allow_anonymous:
        return []
    return [
        (
            "pioneer.enabled",
            "true while auth.required is false: POST /api/pioneer would take notebook contents "
            "from anyone who can reach the HTTP API; set auth.required = true (with "
            "[[auth.tokens]] or [auth.jupyterhub]), or pioneer.allow_anonymous = true",
        )
    ]


def parse_config(text: str, source: Path | str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [("", f"not valid TOML: {e}")]) from None
    try:
        raw = _RawConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, _problems(e) + _sink_table_problems(data)) from None

    problems: list[tuple[str, str]] = []
    sinks: list[SinkSettings] = []
    names: dict[str, int] = {}
    for i, table in enumerate(raw.sinks):
        settings, errs = _sink_settings(table, f"sinks[{i}]")
        problems += errs
        if settings is None:
            continue
        if settings.name in names:
            problems.append(
                (
                    f"sinks[{i}].name",
                    f"duplicate sink name {settings.name!r} (also sinks[{names[settings.name]}])",
                )
            )
        names[settings.name] = i
        sinks.append(settings)
    dead_letter, errs = _sink_settings(raw.dead_letter, "dead_letter")
    problems += errs
    problems += _pioneer_problems(raw.pioneer, raw.auth)
    if problems or dead_letter is None:
        raise ConfigError(source, problems)
    return Config(
        source=Path(source) if source != "<string>" else None,
        server=raw.server,
        schemas=raw.schemas,
        log=raw.log,
        auth=raw.auth,
        pioneer=raw.pioneer,
        sinks=sinks,
        dead_letter=dead_letter,
    )


def default_config_path() -> Path:
    env = os.environ.get("TELEMETRYD_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIG_PATHS[0]


def load_config(path: Path | None = None) -> Config:
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(path, [("", f"cannot read the file: {e.strerror}")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, [("", f"not UTF-8 text: {e}")]) from None
    return parse_config(text, path)
