"""JupyterLab Pioneer's remote_exporter bodies, turned into telemetryd events (docs/events.md).

Pioneer's browser extension sends each event to its server extension, whose `remote_exporter`
POSTs `{"data": {"eventDetail": ..., "notebookState": ...}, "params": ..., "env": [...]}` to the
configured URL. `to_events` checks that body and flattens it into one envelope per event, for the
schema `https://events.telemetryd.org/jupyterlab_pioneer/<eventName>/v1` shipped in schemas/.

NotebookOpenEvent's eventInfo.environ is the Jupyter server's whole os.environ, secrets included:
it is removed (and `environ_removed: true` set) unless the operator opts in with keep_environ.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from msgspec import Meta

PIONEER_EVENTS: tuple[str, ...] = (
    "ActiveCellChangeEvent",
    "CellAddEvent",
    "CellEditEvent",
    "CellExecuteEvent",
    "CellRemoveEvent",
    "ClipboardCopyEvent",
    "ClipboardCutEvent",
    "ClipboardPasteEvent",
    "NotebookHiddenEvent",
    "NotebookOpenEvent",
    "NotebookSaveEvent",
    "NotebookScrollEvent",
    "NotebookVisibleEvent",
)
SCHEMA_PREFIX = "https://events.telemetryd.org/jupyterlab_pioneer/"
SCHEMA_VERSION = "1"
ENVIRON_EVENT = "NotebookOpenEvent"

_KNOWN = frozenset(PIONEER_EVENTS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PioneerError(ValueError):
    """A body that is not a JupyterLab Pioneer remote_exporter body telemetryd can record."""


# These Structs and their descriptions are also the OpenAPI document's (GET /api/openapi.json);
# descriptions and extra_json_schema do not change what is decoded (an unknown eventName gets
# this module's own message).


class EventDetail(msgspec.Struct):
    eventName: Annotated[str, Meta(extra_json_schema={"enum": list(PIONEER_EVENTS)})]
    eventTime: Annotated[
        int,
        Meta(
            description="Milliseconds since the Unix epoch (Date.now()); it becomes the "
            "record's `__timestamp__`.",
            extra_json_schema={"minimum": 0},
        ),
    ]
    eventInfo: Annotated[
        dict[str, Any] | None,
        Meta(
            description="The event's details. NotebookOpenEvent's `environ` (the Jupyter "
            "server's whole environment, secrets included) is removed unless "
            "`[pioneer] keep_environ` is on."
        ),
    ] = None


class NotebookState(msgspec.Struct):
    # The browser leaves out what it does not know (JSON.stringify drops undefined).
    sessionID: str | None = None
    notebookPath: str | None = None
    notebookContent: dict[str, Any] | None = None


class PioneerData(msgspec.Struct):
    eventDetail: EventDetail
    notebookState: NotebookState = msgspec.field(default_factory=NotebookState)


class PioneerBody(msgspec.Struct):
    """What JupyterLab Pioneer's `remote_exporter` POSTs for one event. Unknown keys are
    ignored, so a newer Pioneer adding some is still accepted."""

    data: PioneerData
    params: Annotated[
        dict[str, Any] | None,
        Meta(description="The exporter's configured params, recorded as they are."),
    ] = None
    env: Annotated[
        list[dict[str, str | None]],
        Meta(
            description="`[{name: value}]` for the environment variables the exporter lists; "
            "`WORKSPACE_ID` becomes the record's `workspaceId`."
        ),
    ] = msgspec.field(default_factory=list)


_decode = msgspec.json.Decoder(PioneerBody).decode
_encode = msgspec.json.Encoder().encode


def schema_id(event_name: str) -> str:
    """The id of the schema telemetryd records a Pioneer event under."""
    if event_name not in _KNOWN:
        raise PioneerError(_unknown_message(event_name))
    return f"{SCHEMA_PREFIX}{event_name}/v1"


def timestamp_of(event_time_ms: int) -> str:
    """eventTime (ms since the epoch) as an RFC 3339 UTC time, exact: `...T12:00:00.425000Z`."""
    try:
        moment = _EPOCH + timedelta(milliseconds=event_time_ms)
    except OverflowError:
        raise PioneerError(
            f"eventTime {event_time_ms} is out of range for milliseconds since the epoch"
        ) from None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_events(body: bytes, *, keep_environ: bool = False) -> list[bytes]:
    """The §3 event line(s) for one remote_exporter body, ready for `Ingestor.process`.

    Raises PioneerError naming the problem: malformed JSON, a body of the wrong shape, an event
    name that is not one of PIONEER_EVENTS, or an eventTime out of range.
    """
    try:
        decoded = _decode(body)
    except msgspec.ValidationError as e:
        raise PioneerError(f"not a JupyterLab Pioneer remote_exporter body: {e}") from None
    except (msgspec.DecodeError, RecursionError) as e:
        raise PioneerError(f"malformed JSON: {e}") from None
    detail = decoded.data.eventDetail
    name = detail.eventName
    if name not in _KNOWN:
        raise PioneerError(_unknown_message(name))
    if detail.eventTime < 0:
        raise PioneerError(
            f"eventTime {detail.eventTime} is negative: expected milliseconds since the epoch"
        )
    stamp = timestamp_of(detail.eventTime)
    info = detail.eventInfo
    if not keep_environ and name == ENVIRON_EVENT and info is not None and "environ" in info:
        info = {key: value for key, value in info.items() if key != "environ"}
        info["environ_removed"] = True
    state = decoded.data.notebookState
    data = {
        "eventName": name,
        "eventTime": detail.eventTime,
        "eventInfo": info,
        "sessionID": state.sessionID,
        "notebookPath": state.notebookPath,
        "notebookContent": state.notebookContent,
        "params": decoded.params,
        "workspaceId": _workspace_id(decoded.env),
    }
    envelope = {
        "schema_id": f"{SCHEMA_PREFIX}{name}/v1",
        "version": SCHEMA_VERSION,
        "data": data,
        "timestamp": stamp,
    }
    return [_encode(envelope)]


def without_environ(body: bytes) -> bytes:
    """`body` as the dead-letter sink may keep it: without eventDetail.eventInfo.environ.

    A body that is not JSON is kept only when it cannot hold an environment (no "environ",
    and no escapes that could spell it)."""
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return b"" if b"environ" in body or b"\\u" in body else body
    try:
        info = value["data"]["eventDetail"]["eventInfo"]
    except (KeyError, TypeError, IndexError):
        return body
    if not isinstance(info, dict) or "environ" not in info:
        return body
    del info["environ"]
    info["environ_removed"] = True
    return _encode(value)


def _workspace_id(env: list[dict[str, str | None]]) -> str | None:
    for entry in env:
        if "WORKSPACE_ID" in entry:
            return entry["WORKSPACE_ID"]
    return None


def _unknown_message(name: str) -> str:
    return f"unknown JupyterLab Pioneer event {name!r}; known events: {', '.join(PIONEER_EVENTS)}"
