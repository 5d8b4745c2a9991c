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

Only Jupyter Server imports this module, so it imports jupyter_server, jupyter_events and
traitlets; `telemetryd.client` does not.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
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
    "TelemetrydExtension",
    "install_fast_emit",
    "telemetryd_schema_paths",
]

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
        f"{DEFAULT_SOCKET}, where the systemd unit in telemetryd's README puts it)."
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
            self._had_emit = "emit" in vars(event_logger)
            self._original_emit = install_fast_emit(event_logger, handler)
            self._fast_emit = vars(event_logger)["emit"]
        self.log.info(
            "telemetryd: sending events to %s (%s handler; %s; telemetryd schemas registered: %d)",
            handler.client.path,
            "the configured" if found else "a new",
            "validated in the server"
            if self.validate_in_process
            else "validated by telemetryd (validate_in_process=False)",
            registered,
        )
        return handler

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
