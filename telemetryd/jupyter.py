"""The Jupyter Server extension: a Jupyter Server's events go to telemetryd.

Enabled with one line of jupyter_server_config.py:

    c.ServerApp.jpserver_extensions = {"telemetryd.jupyter": True}

On load it gives the server's `EventLogger` one `TelemetrydHandler` (unless one for the same
socket is already there, configured through `c.EventLogger.handlers`: an event is never sent
twice), registers telemetryd's own schemas with it, and logs the socket it sends to.

With `validate_in_process = False` (the default) it also replaces that EventLogger's `emit`
with a fast path: when telemetryd's handler is the logger's only handler and the schema has no
modifiers and no listeners, the event goes straight to the client (about 1.5 µs instead of
jupyter_events' ~70 µs of deep copy and jsonschema validation on the server's event loop), and
`emit` returns None, as jupyter_events' does when nothing handles an event.
The daemon validates it against the same schema, and an event it rejects goes to its
dead-letter sink with the reason and is logged by the client (once per schema). Otherwise,
and for the bodies of Jupyter Server's own `POST /api/events` (untrusted input, answered 400
when invalid), the original `emit` runs. Configuration (`c.TelemetrydExtension.<name>`):
see `TelemetrydExtension`.

The fast path reads jupyter_events' private state (the EventLogger's `_trait_values`, its
`_logger`, the schema registry's `_schemas` and each schema's `_schema`) and recognises
Jupyter Server's `POST /api/events` by its code object. So it is installed only when the
versions are within `SUPPORTED_JUPYTER_EVENTS` and `SUPPORTED_JUPYTER_SERVER` (the oldest and
newest were tested) and a probe of the EventLogger finds those assumptions hold. Otherwise the
extension keeps jupyter_events' `emit` and the handler (events are validated in the server, as
with `validate_in_process = True`) and logs one warning saying why.

Only Jupyter Server imports this module, so it imports jupyter_server, jupyter_events and
traitlets; `telemetryd.client` does not.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from importlib.resources import as_file, files
from pathlib import Path
from types import CodeType
from typing import Any

from jupyter_events.logger import EventLogger
from jupyter_events.schema_registry import SchemaRegistryException
from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from telemetryd.client import DEFAULT_SOCKET, SOCKET_ENV, TelemetrydHandler
from telemetryd.client.threaded import FLUSH_AT_EXIT_SECS

__all__ = [
    "SUPPORTED_JUPYTER_EVENTS",
    "SUPPORTED_JUPYTER_SERVER",
    "TelemetrydExtension",
    "fast_emit_problem",
    "install_fast_emit",
    "telemetryd_schema_paths",
]

#: The versions the fast path was tested with, as [lowest, first excluded) (major, minor): its
#: reading of jupyter_events' private state is pinned to them. pyproject.toml's extras and
#: tests/constraints-oldest.txt (`make test-jupyter-oldest`) carry the same bounds
#: (tests/test_jupyter_versions.py); docs/jupyter.md#supported-versions says how to bump them.
SUPPORTED_JUPYTER_EVENTS: tuple[tuple[int, int], tuple[int, int]] = ((0, 11), (0, 13))
SUPPORTED_JUPYTER_SERVER: tuple[tuple[int, int], tuple[int, int]] = ((2, 20), (3, 0))
#: A schema of telemetryd's own (registered by the extension): the probe's modifier and
#: listeners are added to it, and removed, before any event is emitted.
_PROBE_SCHEMA = "https://events.telemetryd.org/telemetryd/rejected_event/v1"

_INFO = logging.INFO
_time = time.time


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "telemetryd.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> TelemetrydExtension:
    """Called by Jupyter Server once, after its EventLogger exists (the return value is for
    tests and embedders; Jupyter Server ignores it)."""
    extension = TelemetrydExtension(parent=serverapp, log=serverapp.log)
    extension.attach(serverapp.event_logger)
    return extension


class TelemetrydExtension(LoggingConfigurable):
    """Sends the events of a Jupyter Server's EventLogger to telemetryd.

    The client is closed with the process: it flushes its buffer at interpreter exit for up to
    `flush_at_exit_secs`. Jupyter Server's only stop hook for extensions runs before it shuts
    its kernels down, which emits kernel_actions events, so the extension does not close the
    client there.
    """

    socket_path = Unicode(
        help="telemetryd's Unix socket (default: $TELEMETRYD_SOCKET, else "
        f"{DEFAULT_SOCKET}, where telemetryd's systemd unit (docs/operations.md) puts it)."
    ).tag(config=True)

    max_buffer_events = Int(
        100_000,
        help="Events the client keeps while telemetryd has not acknowledged them (while the "
        "daemon is away, for example); past it the oldest is dropped and counted.",
    ).tag(config=True)

    max_buffer_bytes = Int(
        64 << 20, help="The same buffer's limit in bytes (events and their overhead)."
    ).tag(config=True)

    flush_at_exit_secs = Float(
        FLUSH_AT_EXIT_SECS,
        help="How long the server's exit waits for buffered events to be acknowledged.",
    ).tag(config=True)

    validate_in_process = Bool(
        False,
        help="""Validate events in the server with jupyter_events (jsonschema, ~70 µs an
        event on the server's event loop; an invalid event raises in the code that emits it)
        before the handler sends them. False (default): when telemetryd's handler is the
        EventLogger's only handler and the schema has no modifiers or listeners, events go
        straight to telemetryd (~2 µs), which validates them against the same schemas and
        sends invalid ones to its dead-letter sink with the reason (logged once per schema by
        the client). Jupyter Server's POST /api/events is validated in the server either way.
        """,
    ).tag(config=True)

    @default("socket_path")
    def _default_socket_path(self) -> str:
        return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handler: TelemetrydHandler | None = None
        self.event_logger: EventLogger | None = None
        self._added_handler = False
        self._had_emit = False  # the EventLogger's emit was an instance attribute already
        self._original_emit: Callable[..., Any] | None = None
        self._fast_emit: Callable[..., Any] | None = None
        #: Why the fast path is off although validate_in_process is False (None: it is on).
        self.fast_path_problem: str | None = None

    def attach(self, event_logger: EventLogger) -> TelemetrydHandler:
        """Gives `event_logger` a handler for `socket_path` (or finds the one it has),
        registers telemetryd's schemas and, unless `validate_in_process`, the fast path."""
        if self.event_logger is not None:
            raise RuntimeError("this TelemetrydExtension is already attached")
        self.event_logger = event_logger
        handler = find_handler(event_logger, self.socket_path)
        found = handler is not None
        if handler is None:
            handler = TelemetrydHandler(
                self.socket_path,
                max_buffer_events=self.max_buffer_events,
                max_buffer_bytes=self.max_buffer_bytes,
                flush_at_exit_secs=self.flush_at_exit_secs,
            )
            if event_logger.handlers is None:  # the trait allows None; register_handler not
                event_logger.handlers = []
            event_logger.register_handler(handler)
            self._added_handler = True
        self.handler = handler
        registered = self._register_schemas(event_logger)
        if not self.validate_in_process:
            self.fast_path_problem = fast_emit_problem(event_logger, handler)
            if self.fast_path_problem is None:
                self._had_emit = "emit" in vars(event_logger)
                self._original_emit = install_fast_emit(event_logger, handler)
                self._fast_emit = vars(event_logger)["emit"]
            else:
                self.log.warning(
                    "telemetryd: the fast emit path is off, events are validated in the server "
                    "by jupyter_events (~70 µs an event) and sent by the handler: %s "
                    "(found %s; the fast path supports %s)",
                    self.fast_path_problem,
                    _found_versions(),
                    _supported_versions(),
                )
        if self.validate_in_process:
            path = "validated in the server"
        elif self.fast_path:
            path = "validated by telemetryd (validate_in_process=False, fast path)"
        else:
            path = "validated in the server (validate_in_process=False, fast path off)"
        self.log.info(
            "telemetryd: sending events to %s (%s handler; %s; telemetryd schemas registered: %d)",
            handler.client.path,
            "the configured" if found else "a new",
            path,
            registered,
        )
        return handler

    @property
    def fast_path(self) -> bool:
        """Whether `emit` is the fast path (False with validate_in_process, or when the
        probe found an assumption broken: `fast_path_problem` says which)."""
        return self._fast_emit is not None

    def _register_schemas(self, event_logger: EventLogger) -> int:
        count = 0
        with telemetryd_schema_paths() as paths:
            for path in paths:
                try:
                    event_logger.register_event_schema(path)
                except SchemaRegistryException:
                    continue  # registered already (by the server's config or a second load)
                except Exception as e:  # a schema jupyter_events refuses must not stop a server
                    self.log.warning("telemetryd: cannot register the schema %s: %s", path, e)
                    continue
                count += 1
        return count

    def detach(self, timeout: float | None = 5.0) -> bool:
        """Undoes `attach`: the original `emit` back, the handler removed and closed if this
        extension added it (flushed for up to `timeout` seconds). True if nothing was lost."""
        event_logger, handler = self.event_logger, self.handler
        if event_logger is None or handler is None:
            return True
        if self._original_emit is not None and vars(event_logger).get("emit") is self._fast_emit:
            # (Left alone if something replaced it since: that holds the fast path as its
            # original, and taking it away from under it would undo that too.)
            if self._had_emit:
                event_logger.emit = self._original_emit  # type: ignore[method-assign]
            else:
                del event_logger.emit
        self._original_emit = self._fast_emit = None
        flushed = True
        if self._added_handler:
            event_logger.remove_handler(handler)
            flushed = handler.client.close(timeout)
            handler.close()
        self.event_logger = self.handler = None
        return flushed


def find_handler(event_logger: EventLogger, socket_path: str) -> TelemetrydHandler | None:
    """The TelemetrydHandler already on `event_logger` that sends to `socket_path`, if any."""
    wanted = os.path.realpath(socket_path)
    handlers = [*(event_logger.handlers or ()), *event_logger._logger.handlers]
    for handler in handlers:
        if (
            isinstance(handler, TelemetrydHandler)
            and os.path.realpath(handler.client.path) == wanted
        ):
            return handler
    return None


@contextlib.contextmanager
def telemetryd_schema_paths() -> Iterator[list[Path]]:
    """The YAML and JSON files of telemetryd's own schemas (schemas/telemetryd/), as paths
    for as long as the block runs (the package may be installed in a zip)."""
    with as_file(files("telemetryd.schemas") / "telemetryd") as folder:
        yield sorted(p for p in folder.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})


def _events_post_code() -> CodeType | None:
    """The code of Jupyter Server's `POST /api/events` handler, whose calls to `emit` keep
    jupyter_events' validation: its answer (400 for invalid data) depends on it."""
    try:
        from jupyter_server.services.events.handlers import EventHandler
    except ImportError:  # pragma: no cover - the module is for Jupyter Server
        return None
    code = getattr(inspect.unwrap(EventHandler.post), "__code__", None)
    return code if isinstance(code, CodeType) else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _in_range(version: str | None, bounds: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    if match is None:
        return False
    low, high = bounds
    return low <= (int(match[1]), int(match[2])) < high


def _range_text(name: str, bounds: tuple[tuple[int, int], tuple[int, int]]) -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = bounds
    return f"{name} >={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def _found_versions() -> str:
    return ", ".join(
        f"{name} {_version(name) or '(not installed)'}"
        for name in ("jupyter_events", "jupyter_server")
    )


def _supported_versions() -> str:
    return (
        f"{_range_text('jupyter_events', SUPPORTED_JUPYTER_EVENTS)} and "
        f"{_range_text('jupyter_server', SUPPORTED_JUPYTER_SERVER)}"
    )


def fast_emit_problem(event_logger: EventLogger, handler: TelemetrydHandler) -> str | None:
    """Why `install_fast_emit` must not be used on `event_logger`, or None when the versions
    are supported and its assumptions about jupyter_events' private state hold on this
    instance (`handler` registered on it, telemetryd's schemas registered)."""
    for name, bounds in (
        ("jupyter_events", SUPPORTED_JUPYTER_EVENTS),
        ("jupyter_server", SUPPORTED_JUPYTER_SERVER),
    ):
        if not _in_range(_version(name), bounds):
            return f"{name} {_version(name) or '(not installed)'} is outside the tested range"
    try:
        return _probe(event_logger, handler)
    except Exception as e:  # whatever a changed jupyter_events does, the server must start
        return f"probing the EventLogger failed: {type(e).__name__}: {e}"


def _probe(event_logger: EventLogger, handler: TelemetrydHandler) -> str | None:
    if not callable(getattr(sys, "_getframe", None)):
        return "sys._getframe is missing"
    events_post = _events_post_code()
    if events_post is None or "emit" not in events_post.co_names:
        # The fast path tells POST /api/events (validated in the server) from the server's own
        # events by the caller's code: that handler must call emit itself.
        return "Jupyter Server's POST /api/events handler does not call EventLogger.emit"
    traits = getattr(event_logger, "_trait_values", None)
    if not isinstance(traits, dict):
        return "EventLogger._trait_values is not a dict"
    for name in ("_modifiers", "_modified_listeners", "_unmodified_listeners", "schemas"):
        value = getattr(event_logger, name, None)  # (a trait's default is stored when read)
        if name not in traits or traits[name] is not value:
            return f"EventLogger.{name} is not a trait kept in _trait_values"
    logger = getattr(event_logger, "_logger", None)
    if not isinstance(logger, logging.Logger) or handler not in logger.handlers:
        return "EventLogger._logger is not the logging.Logger its handlers are registered on"
    if _PROBE_SCHEMA not in event_logger.schemas:
        return "telemetryd's schemas are not registered with the EventLogger"
    registered = getattr(traits["schemas"], "_schemas", None)
    schema = registered.get(_PROBE_SCHEMA) if isinstance(registered, dict) else None
    if (
        schema is None
        or schema is not event_logger.schemas.get(_PROBE_SCHEMA)
        or getattr(schema, "_schema", {}).get("version") != schema.version
    ):
        return "SchemaRegistry._schemas[id]._schema does not hold the registered schema"

    # What the fast path reads must see what add_modifier and add_listener do.
    def modifier(schema_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return data  # pragma: no cover - never called

    async def listener(logger: EventLogger, schema_id: str, data: dict[str, Any]) -> None:
        pass  # pragma: no cover - never called

    try:
        event_logger.add_modifier(schema_id=_PROBE_SCHEMA, modifier=modifier)
        event_logger.add_listener(schema_id=_PROBE_SCHEMA, listener=listener, modified=True)
        if modifier not in traits["_modifiers"].get(_PROBE_SCHEMA, ()):
            return "EventLogger.add_modifier does not store the modifier in _modifiers"
        if listener not in traits["_modified_listeners"].get(_PROBE_SCHEMA, ()):
            return "EventLogger.add_listener does not store the listener in _modified_listeners"
        event_logger.remove_listener(schema_id=_PROBE_SCHEMA, listener=listener)
        event_logger.add_listener(schema_id=_PROBE_SCHEMA, listener=listener, modified=False)
        if listener not in traits["_unmodified_listeners"].get(_PROBE_SCHEMA, ()):
            return "EventLogger.add_listener does not store the listener in _unmodified_listeners"
    finally:
        event_logger.remove_modifier(schema_id=_PROBE_SCHEMA, modifier=modifier)
        event_logger.remove_listener(schema_id=_PROBE_SCHEMA, listener=listener)
    return None


def install_fast_emit(event_logger: EventLogger, handler: TelemetrydHandler) -> Callable[..., Any]:
    """Replaces `event_logger.emit` (on this instance) with the fast path the module's
    docstring describes; returns the original (bound) `emit`."""
    original: Callable[..., dict[str, Any] | None] = event_logger.emit
    # traitlets keeps trait values in this dict; reading it directly saves ~0.25 µs a trait
    # per event. Assigning a trait stores the new value in the same dict.
    traits: dict[str, Any] = event_logger._trait_values
    logger = event_logger._logger
    events_post = _events_post_code()
    getframe = sys._getframe

    def emit(
        *,
        schema_id: str,
        data: dict[str, Any],
        timestamp_override: datetime | None = None,
    ) -> dict[str, Any] | None:
        handlers = logger.handlers
        if (
            len(handlers) != 1
            or handlers[0] is not handler
            or handler.filters
            or handler.level > _INFO
            or logger.filters
            or not logger.isEnabledFor(_INFO)
            or traits["_modifiers"].get(schema_id)
            or traits["_modified_listeners"].get(schema_id)
            or traits["_unmodified_listeners"].get(schema_id)
            or (schema := traits["schemas"]._schemas.get(schema_id)) is None
            or getframe(1).f_code is events_post
            or (client := handler.client)._closed  # the handler makes a new one (dictConfig)
        ):
            return original(schema_id=schema_id, data=data, timestamp_override=timestamp_override)
        # EventSchema.version, without the property call. The fast path returns None, as
        # jupyter_events' emit does when nothing handles an event: building the capsule would
        # cost as much as the rest of this function, and no Jupyter Server or JupyterHub code
        # reads it (validate_in_process = True brings it back).
        client.emit(
            schema_id,
            schema._schema["version"],
            data,
            _time() if timestamp_override is None else timestamp_override,
        )
        return None

    event_logger.emit = emit  # type: ignore[method-assign]  # this instance's only
    return original
