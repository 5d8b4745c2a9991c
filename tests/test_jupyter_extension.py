"""telemetryd.jupyter (the Jupyter Server extension) and TelemetrydHandler in jupyter_events,
against the real daemon.

Three live Jupyter Servers share one daemon, each configured one way an operator would:

- `extension`: `c.ServerApp.jpserver_extensions = {"telemetryd.jupyter": True}`, the socket
  from $TELEMETRYD_SOCKET (the fast path: events go straight to the client);
- `handler`: `c.EventLogger.handlers = [TelemetrydHandler(socket), FileHandler(reference)]`
  without the extension (jupyter_events validates, the handler forwards its capsule); the
  FileHandler's capsules are what jupyter_events emitted, to compare with the daemon's records;
- `both`: the handler configured *and* the extension enabled: the extension finds the handler
  instead of adding a second one (an event is sent once), and takes the fast path through it;
- `future` and `unsupported`: the extension where the fast path's assumptions fail (a
  jupyter_events whose EventLogger keeps its modifiers outside traitlets; versions outside the
  tested range): it warns once, saying why, and sends through the handler.

Each saves, renames and deletes a file through the REST contents API, and the records of its
pid are compared with what Jupyter Server emits for those requests. The in-process tests
drive a jupyter_events EventLogger directly.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jupyter_server
import pytest
from jupyter_events import EventLogger
from jupyter_events.logger import SchemaNotRegistered
from traitlets.config import Config, LoggingConfigurable

import telemetryd.jupyter
from telemetryd.client import Client, TelemetrydHandler
from telemetryd.core.timestamps import normalise
from telemetryd.jupyter import (
    TelemetrydExtension,
    _jupyter_server_extension_points,
    _load_jupyter_server_extension,
)
from tests.support.config_text import daemon_config
from tests.support.daemon_process import DaemonProcess
from tests.support.jupyter_server_process import JupyterServerProcess
from tests.support.records import expected_origin, parse_record_time, read_records, records_so_far
from tests.support.socket_client import CONTENTS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SERVER_SCHEMAS = Path(jupyter_server.__file__).parent / "event_schemas"
REJECTED = "https://events.telemetryd.org/telemetryd/rejected_event/v1"
EXTENSION_LINE = 'c.ServerApp.jpserver_extensions = {"telemetryd.jupyter": True}\n'
LOADED = "telemetryd: sending events to "
FAST_PATH_OFF = "telemetryd: the fast emit path is off"
#: A jupyter_events to come, as a config file can make one before the server builds its
#: EventLogger: modifiers kept outside traitlets (so not in `_trait_values`).
FUTURE_EVENT_LOGGER = """
import jupyter_server.serverapp
from jupyter_events.logger import EventLogger

class FutureEventLogger(EventLogger):
    @property
    def _modifiers(self):
        return self.__dict__.setdefault("_future_modifiers", {})

jupyter_server.serverapp.EventLogger = FutureEventLogger
"""
UNSUPPORTED_VERSIONS = (
    "import telemetryd.jupyter\ntelemetryd.jupyter.SUPPORTED_JUPYTER_EVENTS = ((0, 0), (0, 1))\n"
)
FAST_PATH_PROBLEMS = {
    "future": "EventLogger._modifiers is not a trait kept in _trait_values",
    "unsupported": f"jupyter_events {importlib.metadata.version('jupyter_events')} is outside "
    "the tested range",
}


@dataclass
class Daemon:
    process: DaemonProcess
    events: Path
    rejected: Path

    @property
    def socket(self) -> str:
        return str(self.process.socket_path)

    def records(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [r for r in records_so_far(self.events) if predicate(r)]

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], count: int, timeout: float = 20
    ) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.records(predicate)
            return found if len(found) >= count else None

        return wait_for(enough, timeout, f"{count} records")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("telemetryd")
    with DaemonProcess(workdir, daemon_config(workdir)) as process:
        yield Daemon(process, workdir / "out" / "events.jsonl", workdir / "out" / "rejected.jsonl")
        assert process.stop() == 0


@dataclass
class Server:
    name: str
    process: JupyterServerProcess
    reference: Path | None = None  # the `handler` server's FileHandler
    requests: list[tuple[datetime, datetime, list[tuple[str, str, str | None]]]] = field(
        default_factory=list
    )

    @property
    def pid(self) -> int:
        return self.process.pid


def _configs(socket: str, workdir: Path) -> dict[str, tuple[str, dict[str, str]]]:
    reference = workdir / "handler-reference.jsonl"
    handler = (
        "import logging\n"
        "from telemetryd.client import TelemetrydHandler\n"
        f"c.EventLogger.handlers = [TelemetrydHandler({socket!r})"
    )
    return {
        "extension": (EXTENSION_LINE, {"TELEMETRYD_SOCKET": socket}),
        "handler": (handler + f", logging.FileHandler({str(reference)!r})]\n", {}),
        "both": (
            handler + "]\n" + EXTENSION_LINE + f"c.TelemetrydExtension.socket_path = {socket!r}\n",
            {},
        ),
        "future": (FUTURE_EVENT_LOGGER + EXTENSION_LINE, {"TELEMETRYD_SOCKET": socket}),
        "unsupported": (UNSUPPORTED_VERSIONS + EXTENSION_LINE, {"TELEMETRYD_SOCKET": socket}),
    }


@pytest.fixture(scope="module")
def servers(
    daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    workdir = tmp_path_factory.mktemp("jupyter")
    started: dict[str, Server] = {}
    try:
        for name, (config, env) in _configs(daemon.socket, workdir).items():
            process = JupyterServerProcess(workdir / name, config, env=env, wait_ready=False)
            started[name] = Server(name, process)
            process.__enter__()  # all start at once
        started["handler"].reference = workdir / "handler-reference.jsonl"
        for server in started.values():
            server.process.await_ready()
        yield started
        for server in started.values():
            assert server.process.stop_code() == 0, server.process.log()
    finally:
        for server in started.values():
            server.process.__exit__()


def _act(
    server: Server,
    client: httpx.Client,
    method: str,
    url: str,
    expected: list[tuple[str, str, str | None]],
    **kwargs: Any,
) -> httpx.Response:
    """One request, timed; `expected` is the (action, path, source_path) it emits."""
    before = datetime.now(UTC)
    response = client.request(method, url, **kwargs)
    after = datetime.now(UTC)
    server.requests.append((before, after, expected))
    return response


def _contents_records(daemon: Daemon, server: Server) -> list[dict[str, Any]]:
    return daemon.records(
        lambda r: r["__schema__"] == CONTENTS and r["__origin__"].get("pid") == server.pid
    )


@pytest.mark.parametrize("name", ["extension", "handler", "both", "future", "unsupported"])
def test_contents_events_arrive_once_with_their_own_time(
    daemon: Daemon, servers: dict[str, Server], name: str
) -> None:
    server = servers[name]
    x, y = f"{name}-x.txt", f"{name}-y.txt"
    with server.process.client() as client:
        body = {"type": "file", "format": "text", "content": "hello"}
        # A save answers with the new model, read through get (emitted first); so does a rename.
        r = _act(
            server,
            client,
            "PUT",
            f"/api/contents/{x}",
            [("get", x, None), ("save", x, None)],
            json=body,
        )
        assert r.status_code == 201, r.text
        r = _act(
            server,
            client,
            "PATCH",
            f"/api/contents/{x}",
            [("rename", y, x), ("get", y, None)],
            json={"path": y},
        )
        assert r.status_code == 200, r.text
        r = _act(server, client, "DELETE", f"/api/contents/{y}", [("delete", y, None)])
        assert r.status_code == 204, r.text
        # A last event: one connection keeps the order, so once it is in, nothing sent
        # before it (a duplicate included) is still on its way.
        sentinel = f"{name}-sentinel.txt"
        r = _act(
            server,
            client,
            "PUT",
            f"/api/contents/{sentinel}",
            [("get", sentinel, None), ("save", sentinel, None)],
            json=body,
        )
        assert r.status_code == 201, r.text
    daemon.wait(
        lambda r: (
            r["__origin__"].get("pid") == server.pid
            and r.get("path") == sentinel
            and r["action"] == "save"
        ),
        1,
    )
    records = _contents_records(daemon, server)
    expected = [event for _, _, events in server.requests for event in events]
    got = [(r["action"], r["path"], r.get("source_path")) for r in records]
    assert collections.Counter(got) == collections.Counter(expected), got
    assert collections.Counter(r["action"] for r in records) == {
        "get": 3,
        "save": 2,
        "rename": 1,
        "delete": 1,
    }
    windows = {
        event: (before, after) for before, after, events in server.requests for event in events
    }
    for record in records:
        assert record["__schema__"] == CONTENTS
        assert record["__schema_version__"] == "1"
        assert record["__metadata_version__"] == 1
        assert record["__origin__"] == expected_origin(server.pid)
        before, after = windows[(record["action"], record["path"], record.get("source_path"))]
        assert before <= parse_record_time(record["__timestamp__"]) <= after, record
    if server.reference is not None:
        # What jupyter_events gave its handlers, capsule by capsule: the same events, with
        # the same timestamps (theirs in jupyter_events' `+00:00Z` form).
        capsules = [
            json.loads(line)
            for line in server.reference.read_text().splitlines()
            if json.loads(line)["__schema__"] == CONTENTS
        ]
        assert [{**c, "__timestamp__": normalise(c["__timestamp__"])} for c in capsules] == [
            {k: v for k, v in r.items() if k != "__origin__"} for r in records
        ]


def test_the_extension_logs_one_line_naming_the_socket(
    daemon: Daemon, servers: dict[str, Server]
) -> None:
    for name, origin in [("extension", "a new"), ("both", "the configured")]:
        lines = [line for line in servers[name].process.log().splitlines() if LOADED in line]
        assert len(lines) == 1, lines
        assert f"{LOADED}{daemon.socket} ({origin} handler" in lines[0]
        assert "validate_in_process=False, fast path)" in lines[0]
        assert FAST_PATH_OFF not in servers[name].process.log()
    assert LOADED not in servers["handler"].process.log()


@pytest.mark.parametrize("name", ["future", "unsupported"])
def test_the_extension_warns_once_why_the_fast_path_is_off(
    daemon: Daemon, servers: dict[str, Server], name: str
) -> None:
    """The events of these servers arrived (test_contents_events_arrive_once_with_their_own_time):
    through jupyter_events' emit and the handler, which the log says, with the reason."""
    log = servers[name].process.log().splitlines()
    (warning,) = [line for line in log if FAST_PATH_OFF in line]
    assert warning.startswith("[W "), warning
    assert FAST_PATH_PROBLEMS[name] in warning
    found = ", ".join(
        f"{package} {importlib.metadata.version(package)}"
        for package in ("jupyter_events", "jupyter_server")
    )
    events_range = ">=0.0,<0.1" if name == "unsupported" else ">=0.11,<0.13"
    supported = f"jupyter_events {events_range} and jupyter_server >=2.20,<3.0"
    assert warning.endswith(f"(found {found}; the fast path supports {supported})"), warning
    (loaded,) = [line for line in log if LOADED in line]
    assert f"{LOADED}{daemon.socket} (a new handler; validated in the server (" in loaded
    assert "fast path off" in loaded


def test_post_api_events_keeps_jupyter_servers_validation(
    daemon: Daemon, servers: dict[str, Server]
) -> None:
    """Jupyter Server's own POST /api/events answers 400 for invalid data with the extension
    too: the bodies it takes from clients are validated in the server, not by the fast path."""
    server = servers["extension"]
    event = {
        "schema_id": CONTENTS,
        "version": "1",
        "data": {"action": "save", "path": "posted.ipynb"},
        "timestamp": "2026-11-22T01:30:21+00:00Z",  # Jupyter Server parses no fraction
    }
    invalid = {**event, "data": {"action": "explode", "path": "posted-invalid.ipynb"}}
    with server.process.client() as client:
        refused = client.post("/api/events", json=invalid)
        assert refused.status_code == 400, refused.text
        assert "explode" in refused.json()["message"]
        accepted = client.post("/api/events", json=event)
        assert accepted.status_code == 204, accepted.text
    (record,) = daemon.wait(lambda r: r.get("path") == "posted.ipynb", 1)
    assert record["__timestamp__"] == "2026-11-22T01:30:21.000000Z"
    assert record["__origin__"] == expected_origin(server.pid)
    assert not daemon.records(lambda r: r.get("path") == "posted-invalid.ipynb")


def test_telemetryd_schemas_are_registered_with_the_server(
    daemon: Daemon, servers: dict[str, Server]
) -> None:
    """Jupyter Server accepts telemetryd's own schemas on POST /api/events once the extension
    registered them (and does not know them without it)."""
    event = {
        "schema_id": REJECTED,
        "version": "1",
        "data": {"reason": "invalid_json", "message": "posted to Jupyter Server"},
    }
    for name, status in [("extension", 204), ("handler", 400)]:
        with servers[name].process.client() as client:
            response = client.post("/api/events", json=event)
            assert response.status_code == status, (name, response.text)
    (record,) = daemon.wait(lambda r: r["__schema__"] == REJECTED, 1)
    assert record["message"] == "posted to Jupyter Server"
    assert record["__origin__"] == expected_origin(servers["extension"].pid)


# --- in process: a jupyter_events EventLogger ----------------------------------------------


#: Every EventLogger the tests make, kept alive: jupyter_events names its logging.Logger after
#: id(self), so a new EventLogger at a freed address would get the old one's handlers.
_event_loggers: list[EventLogger] = []


def _event_logger(
    *handlers: logging.Handler, event_logger_class: type[EventLogger] = EventLogger
) -> EventLogger:
    logger = event_logger_class(handlers=list(handlers))
    _event_loggers.append(logger)
    for schema in ("contents_service", "kernel_actions"):
        logger.register_event_schema(SERVER_SCHEMAS / schema / "v1.yaml")
    return logger


class Capsules(logging.Handler):
    """Keeps the capsule of each record, as jupyter_events gave it to its handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.capsules: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.msg, dict)
        self.capsules.append(dict(record.msg))


class FakeServerApp(LoggingConfigurable):
    """What the extension uses of a ServerApp: its config, its log and its event_logger."""

    def __init__(self, event_logger: EventLogger, **options: Any) -> None:
        super().__init__(config=Config({"TelemetrydExtension": options}))
        self.event_logger = event_logger


def _save(path: str) -> dict[str, Any]:
    return {"action": "save", "path": path}


def _by_path(daemon: Daemon, prefix: str, count: int) -> dict[str, dict[str, Any]]:
    records = daemon.wait(lambda r: str(r.get("path", "")).startswith(prefix), count)
    assert len(records) == count, records
    return {r["path"]: r for r in records}


def test_extension_points() -> None:
    assert _jupyter_server_extension_points() == [{"module": "telemetryd.jupyter"}]


def test_handler_records_carry_jupyter_events_timestamps(daemon: Daemon) -> None:
    capsules = Capsules()
    handler = TelemetrydHandler(daemon.socket)
    logger = _event_logger(handler, capsules)
    try:
        logger.emit(schema_id=CONTENTS, data=_save("handler/now"))
        logger.emit(
            schema_id=CONTENTS,
            data=_save("handler/given"),
            timestamp_override=datetime(2026, 11, 22, 1, 30, 21, 131970, tzinfo=UTC),
        )
        # The handler path validates in jupyter_events: the caller gets the error, nothing
        # is sent.
        with pytest.raises(jsonschema.ValidationError):
            logger.emit(schema_id=CONTENTS, data={"action": "explode", "path": "handler/bad"})
        assert handler.client.flush(10)
        assert handler.client.stats().rejected == {}
    finally:
        handler.close()
    records = _by_path(daemon, "handler/", 2)
    assert [c["path"] for c in capsules.capsules] == ["handler/now", "handler/given"]
    for capsule in capsules.capsules:
        record = records[capsule["path"]]
        assert record["__timestamp__"] == normalise(capsule["__timestamp__"])
        assert record["__origin__"] == expected_origin(os.getpid())
    assert records["handler/given"]["__timestamp__"] == "2026-11-22T01:30:21.131970Z"


Attached = tuple[EventLogger, TelemetrydExtension, list[str]]


@pytest.fixture
def attach(daemon: Daemon) -> Iterator[Callable[..., Attached]]:
    """Makes an EventLogger (of `event_logger_class`) with the extension loaded the way
    Jupyter Server loads it; the list collects the schema ids of the calls that reached
    jupyter_events' own emit. With `fast=False` the fast path is expected to be off.

    Called in the test, not at setup: pytest attaches its log capture handlers to every
    non-propagating logger that exists when a test phase starts, jupyter_events' included,
    and another handler there rightly turns the fast path off."""
    made: list[tuple[EventLogger, Callable[..., Any], TelemetrydExtension]] = []

    def attach(
        event_logger_class: type[EventLogger] = EventLogger, *, fast: bool = True
    ) -> Attached:
        logger = _event_logger(event_logger_class=event_logger_class)
        slow_calls: list[str] = []
        original = logger.emit

        def counted(**kwargs: Any) -> Any:
            slow_calls.append(kwargs["schema_id"])
            return original(**kwargs)

        logger.emit = counted  # type: ignore[method-assign]
        extension = _load_jupyter_server_extension(FakeServerApp(logger, socket_path=daemon.socket))
        assert (vars(logger)["emit"] is not counted) == fast
        assert extension.fast_path == fast
        made.append((logger, counted, extension))
        return logger, extension, slow_calls

    yield attach
    for logger, counted, extension in made:
        assert extension.detach(10)
        assert vars(logger)["emit"] is counted  # what was there before
        assert logger.handlers == []


def test_fast_path_sends_the_event_with_its_time_and_returns_none(
    daemon: Daemon, attach: Callable[..., Attached]
) -> None:
    logger, extension, slow_calls = attach()
    assert extension.handler is not None
    assert logger.handlers == [extension.handler]
    before = datetime.now(UTC)
    now = logger.emit(schema_id=CONTENTS, data=_save("fast/now"))
    after = datetime.now(UTC)
    given = logger.emit(
        schema_id=CONTENTS,
        data=_save("fast/given"),
        timestamp_override=datetime(2026, 11, 22, 1, 30, 21, 131970, tzinfo=UTC),
    )
    assert (now, given) == (None, None)  # as jupyter_events' emit when nothing handles it
    assert slow_calls == []
    assert extension.handler.client.flush(10)
    records = _by_path(daemon, "fast/", 2)
    for record in records.values():
        assert record["__schema__"] == CONTENTS
        assert record["__schema_version__"] == "1"
        assert record["__origin__"] == expected_origin(os.getpid())
    assert before <= parse_record_time(records["fast/now"]["__timestamp__"]) <= after
    assert records["fast/given"]["__timestamp__"] == "2026-11-22T01:30:21.131970Z"


def test_fast_path_rejections_are_logged_once_not_raised(
    daemon: Daemon,
    attach: Callable[..., Attached],
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger, extension, slow_calls = attach()
    assert extension.handler is not None
    caplog.set_level(logging.WARNING, logger="telemetryd.client")
    for path in ("fast-invalid/1", "fast-invalid/2"):
        assert logger.emit(schema_id=CONTENTS, data={"action": "explode", "path": path}) is None
    assert slow_calls == []
    assert extension.handler.client.flush(10)
    assert extension.handler.client.stats().rejected == {"invalid_data": 2}
    warnings = [r for r in caplog.records if r.name == "telemetryd.client"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert CONTENTS in warnings[0].getMessage()
    assert "invalid_data" in warnings[0].getMessage()
    dead = wait_for(
        lambda: (
            [r for r in read_records(daemon.rejected) if "fast-invalid/" in r.get("raw", "")]
            if daemon.rejected.exists()
            else None
        ),
        10,
        "dead letters",
    )
    assert len(dead) == 2
    assert not daemon.records(lambda r: str(r.get("path", "")).startswith("fast-invalid/"))


def test_fast_path_falls_back_when_jupyter_events_has_work(
    daemon: Daemon, attach: Callable[..., Attached], tmp_path: Path
) -> None:
    """Modifiers, listeners and other handlers run as jupyter_events runs them; the event is
    still sent once."""
    logger, extension, slow_calls = attach()
    assert extension.handler is not None

    def modifier(schema_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "path": data["path"] + "-modified"}

    logger.add_modifier(schema_id=CONTENTS, modifier=modifier)
    logger.emit(schema_id=CONTENTS, data=_save("fallback/modifier"))
    logger.remove_modifier(schema_id=CONTENTS, modifier=modifier)

    heard: list[dict[str, Any]] = []

    async def listener(logger: EventLogger, schema_id: str, data: dict[str, Any]) -> None:
        heard.append(data)

    async def with_listener() -> None:
        logger.add_listener(schema_id=CONTENTS, listener=listener)
        logger.emit(schema_id=CONTENTS, data=_save("fallback/listener"))
        await logger.gather_listeners()
        logger.remove_listener(schema_id=CONTENTS, listener=listener)

    asyncio.run(with_listener())
    assert heard == [_save("fallback/listener")]

    file_handler = logging.FileHandler(tmp_path / "file.jsonl")
    logger.register_handler(file_handler)
    logger.emit(schema_id=CONTENTS, data=_save("fallback/file"))
    logger.remove_handler(file_handler)
    file_handler.close()
    lines = (tmp_path / "file.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["fallback/file"]

    with pytest.warns(SchemaNotRegistered):
        assert logger.emit(schema_id="https://example.org/unregistered", data={}) is None

    logger.emit(schema_id=CONTENTS, data=_save("fallback/fast-again"))
    assert slow_calls == [CONTENTS] * 3 + ["https://example.org/unregistered"]
    assert extension.handler.client.flush(10)
    records = _by_path(daemon, "fallback/", 4)
    assert set(records) == {
        "fallback/modifier-modified",
        "fallback/listener",
        "fallback/file",
        "fallback/fast-again",
    }


class FutureEventLogger(EventLogger):
    """A jupyter_events to come: modifiers kept outside traitlets."""

    @property
    def _modifiers(self) -> dict[str, set[Callable[..., Any]]]:  # type: ignore[override]
        modifiers: dict[str, set[Callable[..., Any]]] = self.__dict__.setdefault("_mods", {})
        return modifiers


class DivertedModifiersEventLogger(EventLogger):
    """A jupyter_events to come: `_modifiers` still a trait, but add_modifier keeps them
    elsewhere (the fast path would skip them silently)."""

    def add_modifier(self, *, schema_id: str | None = None, modifier: Any) -> None:
        self.__dict__.setdefault("_other_modifiers", []).append((schema_id, modifier))

    def remove_modifier(self, *, schema_id: str | None = None, modifier: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("assumption", "problem"),
    [
        ("modifiers_not_a_trait", "EventLogger._modifiers is not a trait kept in _trait_values"),
        ("modifiers_elsewhere", "add_modifier does not store the modifier in _modifiers"),
        ("jupyter_events_version", "is outside the tested range"),
        ("jupyter_server_version", "is outside the tested range"),
        ("post_api_events", "POST /api/events handler does not call EventLogger.emit"),
    ],
)
def test_fast_path_stays_off_when_an_assumption_fails(
    daemon: Daemon,
    attach: Callable[..., Attached],
    *,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    assumption: str,
    problem: str,
) -> None:
    """The extension keeps jupyter_events' emit (validated in process) and the handler,
    warns once why, and the events still arrive with their data."""
    event_logger_class: type[EventLogger] = EventLogger
    if assumption == "modifiers_not_a_trait":
        event_logger_class = FutureEventLogger
    elif assumption == "modifiers_elsewhere":
        event_logger_class = DivertedModifiersEventLogger
    elif assumption == "jupyter_events_version":
        monkeypatch.setattr(telemetryd.jupyter, "SUPPORTED_JUPYTER_EVENTS", ((0, 0), (0, 1)))
    elif assumption == "jupyter_server_version":
        monkeypatch.setattr(telemetryd.jupyter, "SUPPORTED_JUPYTER_SERVER", ((9, 0), (10, 0)))
    else:
        monkeypatch.setattr(telemetryd.jupyter, "_events_post_code", lambda: None)
    caplog.set_level(logging.WARNING)
    logger, extension, slow_calls = attach(event_logger_class, fast=False)
    assert extension.handler is not None
    assert extension.fast_path_problem is not None
    assert problem in extension.fast_path_problem
    warnings = [r.getMessage() for r in caplog.records if "fast emit path is off" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert problem in warnings[0]
    assert "(found jupyter_events " in warnings[0]
    assert "the fast path supports jupyter_events >=" in warnings[0]
    prefix = f"off-{assumption}/"
    with pytest.raises(jsonschema.ValidationError):  # validated in process, as jupyter_events does
        logger.emit(schema_id=CONTENTS, data={"action": "explode", "path": prefix + "bad"})
    capsules = [logger.emit(schema_id=CONTENTS, data=_save(f"{prefix}{i}")) for i in range(3)]
    assert all(capsule is not None for capsule in capsules)
    assert slow_calls == [CONTENTS] * 4
    assert extension.handler.client.flush(10)
    records = _by_path(daemon, prefix, 3)
    assert sorted(records) == [f"{prefix}{i}" for i in range(3)]
    for capsule in capsules:
        assert capsule is not None
        record = records[capsule["path"]]
        assert record["action"] == "save"
        assert record["__timestamp__"] == normalise(capsule["__timestamp__"])
        assert record["__origin__"] == expected_origin(os.getpid())


def test_validate_in_process_keeps_jupyter_events_emit(daemon: Daemon) -> None:
    logger = _event_logger()
    extension = _load_jupyter_server_extension(
        FakeServerApp(logger, socket_path=daemon.socket, validate_in_process=True)
    )
    try:
        assert "emit" not in vars(logger)
        with pytest.raises(jsonschema.ValidationError):
            logger.emit(schema_id=CONTENTS, data={"action": "explode", "path": "inproc/bad"})
        capsule = logger.emit(schema_id=CONTENTS, data=_save("inproc/good"))
        assert capsule is not None
        assert extension.handler is not None
        assert extension.handler.client.flush(10)
    finally:
        assert extension.detach(10)
    records = _by_path(daemon, "inproc/", 1)
    assert records["inproc/good"]["__timestamp__"] == normalise(capsule["__timestamp__"])


def test_a_configured_handler_for_the_socket_is_used_not_doubled(
    daemon: Daemon, tmp_path: Path
) -> None:
    configured = TelemetrydHandler(daemon.socket)
    other = TelemetrydHandler(tmp_path / "other.sock")  # never answers: events stay buffered
    logger = _event_logger(configured)
    first = _load_jupyter_server_extension(FakeServerApp(logger, socket_path=daemon.socket))
    # A second load (another config path to the same socket) finds the same handler.
    second = _load_jupyter_server_extension(
        FakeServerApp(logger, socket_path=str(Path(daemon.socket).parent / "." / "telemetryd.sock"))
    )
    try:
        assert first.handler is configured
        assert second.handler is configured
        assert logger.handlers == [configured]
        assert REJECTED in logger.schemas
        logger.emit(schema_id=CONTENTS, data=_save("dedup/once"))
        assert configured.client.flush(10)
        assert _by_path(daemon, "dedup/", 1)
        # A handler for another socket is another destination: both get the event.
        logger.register_handler(other)
        logger.emit(schema_id=CONTENTS, data=_save("dedup/two-destinations"))
        assert configured.client.flush(10)
        assert other.client.stats().emitted == 1
    finally:
        second.detach()
        first.detach()
        assert "emit" not in vars(logger)
        assert logger.handlers == [configured, other]  # not theirs to remove
        configured.close()
        other.client.close(0)
        other.close()
    assert len(_by_path(daemon, "dedup/", 2)) == 2


def test_the_socket_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRYD_SOCKET", "/tmp/from-env.sock")
    assert TelemetrydExtension().socket_path == "/tmp/from-env.sock"
    monkeypatch.delenv("TELEMETRYD_SOCKET")
    assert TelemetrydExtension().socket_path == "/run/telemetryd/telemetryd.sock"
    assert (
        TelemetrydExtension(
            config=Config({"TelemetrydExtension": {"socket_path": "x"}})
        ).socket_path
        == "x"
    )


def test_client_float_timestamps(daemon: Daemon) -> None:
    """The fast path hands the client its time as a float; the writer formats it. A float
    that is no time at all is dropped as unencodable, and the writer goes on."""
    with Client(daemon.socket) as client:
        moment = time.time()
        client.emit(CONTENTS, "1", _save("float/now"), moment)
        client.emit(CONTENTS, "1", _save("float/nan"), float("nan"))
        client.emit(CONTENTS, "1", _save("float/given"), 1795311021.13197)
        client.emit(CONTENTS, "1", _save("float/after"))
        assert client.flush(10)
        assert client.stats().dropped == {"unencodable": 1}
    records = _by_path(daemon, "float/", 3)
    assert set(records) == {"float/now", "float/given", "float/after"}
    assert records["float/given"]["__timestamp__"] == "2026-11-22T01:30:21.131970Z"
    stamp = parse_record_time(records["float/now"]["__timestamp__"])
    assert abs(stamp.timestamp() - moment) < 1e-6
