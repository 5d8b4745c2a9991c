"""JupyterLab Pioneer remote_exporter bodies → telemetryd envelopes the shipped schemas accept.

The sample bodies follow what jupyterlab-pioneer 1.7.3 sends: eventInfo as its browser extension
(lib/producer.js) builds it, wrapped by the server's remote_exporter (default_exporters.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from telemetryd.core.ingest import Ingestor
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.integrations import pioneer
from telemetryd.integrations.pioneer import (
    PIONEER_EVENTS,
    PioneerError,
    schema_id,
    timestamp_of,
    to_events,
    without_environ,
)

ORIGIN = b'{"transport":"http","user":"pioneer"}'
NOW = "2026-11-22T01:30:21.131970Z"
EVENT_TIME = 1699962682425  # from a real Pioneer log line (reference 003)
EVENT_STAMP = "2023-11-14T11:51:22.425000Z"
SESSION = "09ceefc2-82af-41d0-b806-a76369748020"
REGISTRY = SchemaRegistry.load()

ACTIVE_CELL = {"id": "83a72108-db56-43e3-b938-4aca6667484f", "index": 5, "type": "code"}
VISIBLE_CELLS = [
    {"id": "2f4e6013-6729-4e01-8419-4feeda64cd48", "index": 4, "type": "markdown"},
    {"id": "83a72108-db56-43e3-b938-4aca6667484f", "index": 5, "type": "code"},
]
ENVIRON = {"HOME": "/home/jovyan", "JUPYTERHUB_API_TOKEN": "s3cr3t", "AWS_SECRET_ACCESS_KEY": "k"}

EVENT_INFOS: dict[str, Any] = {
    "ActiveCellChangeEvent": {"cells": [{**ACTIVE_CELL, "metadata": None}]},
    "CellAddEvent": {"cells": [{**ACTIVE_CELL, "index": 6, "metadata": {"tags": ["new"]}}]},
    "CellEditEvent": {
        "index": 6,
        "doc": ["import os", "print(1)"],
        "type": "code",
        "metadata": None,
    },
    "CellExecuteEvent": {
        "cells": [{**ACTIVE_CELL, "metadata": None}],
        "success": False,
        "kernelError": {
            "errorName": "NameError",
            "errorValue": "name 'x' is not defined",
            "traceback": ["\u001b[0;31mNameError\u001b[0m: name 'x' is not defined"],
        },
    },
    "CellRemoveEvent": {"cells": [{"index": 7, "type": "code", "metadata": None}]},
    "ClipboardCopyEvent": {"cells": [{**ACTIVE_CELL, "metadata": None}], "selection": "x = 1"},
    "ClipboardCutEvent": {"cells": [{**ACTIVE_CELL, "metadata": None}], "selection": "x = 1"},
    "ClipboardPasteEvent": {"cells": [{**ACTIVE_CELL, "metadata": None}], "selection": "y"},
    "NotebookHiddenEvent": None,
    "NotebookOpenEvent": {"environ": ENVIRON},
    "NotebookSaveEvent": None,
    "NotebookScrollEvent": {"cells": VISIBLE_CELLS},
    "NotebookVisibleEvent": {"cells": VISIBLE_CELLS},
}


def body(
    name: str,
    info: Any = None,
    *,
    event_time: Any = EVENT_TIME,
    params: Any = None,
    env: Any = None,
    state: Any = None,
) -> bytes:
    """A remote_exporter body as jupyterlab-pioneer 1.7.3 posts it."""
    return json.dumps(
        {
            "data": {
                "eventDetail": {"eventName": name, "eventTime": event_time, "eventInfo": info},
                "notebookState": state
                if state is not None
                else {"sessionID": SESSION, "notebookPath": "alpha.ipynb", "notebookContent": None},
            },
            "params": params,
            "env": [{"WORKSPACE_ID": "ws-alice"}] if env is None else env,
        }
    ).encode()


def ingest(lines: list[bytes]) -> list[dict[str, Any]]:
    records, rejected = Ingestor(REGISTRY).process(lines, ORIGIN, NOW, 0.0)
    assert rejected == []
    return [json.loads(r.payload) for r in records]


def envelope(line: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(line)
    return decoded


def test_the_thirteen_events_have_a_shipped_schema_each() -> None:
    assert len(PIONEER_EVENTS) == len(set(PIONEER_EVENTS)) == 13
    assert set(EVENT_INFOS) == set(PIONEER_EVENTS)
    for name in PIONEER_EVENTS:
        assert schema_id(name) == f"https://events.telemetryd.org/jupyterlab_pioneer/{name}/v1"
        schema = REGISTRY.get(schema_id(name), "1")
        assert schema is not None, name
        assert schema.personal_data is True
        assert schema.schema["properties"]["eventName"]["const"] == name


@pytest.mark.parametrize("name", PIONEER_EVENTS)
def test_every_event_maps_to_an_envelope_the_ingestor_accepts(name: str) -> None:
    params = {"source": "nebari"}
    [line] = to_events(body(name, EVENT_INFOS[name], params=params))
    sent = envelope(line)
    assert sent["schema_id"] == schema_id(name)
    assert sent["version"] == "1"
    assert sent["timestamp"] == EVENT_STAMP
    [record] = ingest([line])
    assert record["__schema__"] == schema_id(name)
    assert record["__schema_version__"] == "1"
    assert record["__timestamp__"] == EVENT_STAMP
    expected_info = EVENT_INFOS[name]
    if name == "NotebookOpenEvent":
        expected_info = {"environ_removed": True}
    assert {k: v for k, v in record.items() if not k.startswith("__")} == {
        "eventName": name,
        "eventTime": EVENT_TIME,
        "eventInfo": expected_info,
        "sessionID": SESSION,
        "notebookPath": "alpha.ipynb",
        "notebookContent": None,
        "params": params,
        "workspaceId": "ws-alice",
    }


def test_real_log_samples_are_accepted() -> None:
    # The eventDetail/notebookState of reference 003 (an older Pioneer: cells without type).
    samples = [
        ("ActiveCellChangeEvent", {"cells": [{"id": ACTIVE_CELL["id"], "index": 5}]}),
        ("CellEditEvent", {"index": 6, "doc": [""]}),
        ("CellRemoveEvent", {"cells": [{"index": 7}]}),
    ]
    lines = [line for name, info in samples for line in to_events(body(name, info))]
    assert [r["eventName"] for r in ingest(lines)] == [name for name, _ in samples]


def test_cell_edit_change_set_form_is_accepted() -> None:
    info = {"index": 2, "changes": [5, [0, "x"], 3], "type": "code"}
    [record] = ingest(to_events(body("CellEditEvent", info)))
    assert record["eventInfo"] == info


def test_whole_notebook_and_missing_state_are_accepted() -> None:
    content = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    state = {"sessionID": SESSION, "notebookPath": "a.ipynb", "notebookContent": content}
    [record] = ingest(to_events(body("NotebookSaveEvent", state=state)))
    assert record["notebookContent"] == content
    # JSON.stringify drops undefined: a notebook without a kernel session has no sessionID.
    [record] = ingest(to_events(body("NotebookSaveEvent", state={"notebookPath": "a.ipynb"})))
    assert record["sessionID"] is None
    assert record["notebookContent"] is None


def test_environ_is_removed_by_default() -> None:
    [line] = to_events(body("NotebookOpenEvent", {"environ": ENVIRON}))
    assert b"s3cr3t" not in line
    assert envelope(line)["data"]["eventInfo"] == {"environ_removed": True}


def test_environ_is_kept_when_the_operator_opts_in() -> None:
    [line] = to_events(body("NotebookOpenEvent", {"environ": ENVIRON}), keep_environ=True)
    [record] = ingest([line])
    assert record["eventInfo"] == {"environ": ENVIRON}


def test_environ_is_only_touched_on_notebook_open() -> None:
    info = {"cells": [{**ACTIVE_CELL, "metadata": None}], "environ": {"A": "b"}}
    [line] = to_events(body("ActiveCellChangeEvent", info))
    assert envelope(line)["data"]["eventInfo"] == info


def test_workspace_id_is_found_in_env_or_null() -> None:
    env = [{"OTHER": "x"}, {"WORKSPACE_ID": "ws-bob"}]
    [line] = to_events(body("NotebookSaveEvent", env=env))
    assert envelope(line)["data"]["workspaceId"] == "ws-bob"
    no_id: list[list[dict[str, str | None]]] = [[], [{"WORKSPACE_ID": None}]]
    for empty in no_id:
        [line] = to_events(body("NotebookSaveEvent", env=empty))
        assert envelope(line)["data"]["workspaceId"] is None
        ingest([line])


@pytest.mark.parametrize(
    ("event_time", "stamp"),
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1, "1970-01-01T00:00:00.001000Z"),
        (999, "1970-01-01T00:00:00.999000Z"),
        (EVENT_TIME, EVENT_STAMP),
        (1732239021131, "2024-11-22T01:30:21.131000Z"),
        (253402300799999, "9999-12-31T23:59:59.999000Z"),
    ],
)
def test_event_time_becomes_an_exact_utc_timestamp(event_time: int, stamp: str) -> None:
    assert timestamp_of(event_time) == stamp
    [line] = to_events(body("NotebookSaveEvent", event_time=event_time))
    assert envelope(line)["timestamp"] == stamp
    [record] = ingest([line])
    assert record["__timestamp__"] == stamp
    assert record["eventTime"] == event_time


def test_unknown_event_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        PioneerError, match="unknown JupyterLab Pioneer event 'CellExplodeEvent'"
    ) as e:
        to_events(body("CellExplodeEvent", {}))
    assert all(name in str(e.value) for name in PIONEER_EVENTS)
    with pytest.raises(PioneerError, match="CellExplodeEvent"):
        schema_id("CellExplodeEvent")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"data": {"eventDetail": ', "malformed JSON"),
        (b"", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b'{"data": {"notebookState": {}}}', "eventDetail"),
        (b"{}", "`data`"),
        (b"[]", "Pioneer remote_exporter body"),
        (
            b'{"data": {"eventDetail": {"eventName": "NotebookSaveEvent"}}}',
            "eventTime",
        ),
        (
            b'{"data": {"eventDetail": {"eventName": "NotebookSaveEvent", "eventTime": "now"}}}',
            "eventTime",
        ),
        (body("NotebookSaveEvent", event_time=-5), "negative"),
        (body("NotebookSaveEvent", event_time=10**18), "out of range"),
        (body("CellAddEvent", ["not", "an", "object"]), "eventInfo"),
    ],
)
def test_bad_bodies_are_refused_naming_the_problem(raw: bytes, problem: str) -> None:
    with pytest.raises(PioneerError, match=problem):
        to_events(raw)


def test_unknown_body_keys_are_ignored() -> None:
    raw = json.loads(body("NotebookSaveEvent"))
    raw["exporter"] = {"type": "remote_exporter"}
    raw["data"]["eventDetail"]["extra"] = 1
    [record] = ingest(to_events(json.dumps(raw).encode()))
    assert record["eventName"] == "NotebookSaveEvent"


def test_module_exports() -> None:
    assert pioneer.SCHEMA_VERSION == "1"
    assert issubclass(PioneerError, ValueError)


def test_a_refused_body_keeps_no_environment_for_the_dead_letter() -> None:
    body = json.dumps(
        {"data": {"eventDetail": {"eventName": "NotebookOpenEvent", "eventTime": -1,
                                  "eventInfo": {"environ": {"SECRET": "s3cr3t"}}}}}
    ).encode()  # fmt: skip
    kept = without_environ(body)
    assert b"s3cr3t" not in kept
    assert json.loads(kept)["data"]["eventDetail"]["eventInfo"] == {"environ_removed": True}
    assert without_environ(b'{"no": "environ here"') == b""  # not JSON, might hold one
    assert without_environ(b'{"\\u0065nviron": ') == b""  # nor spelled with escapes
    assert without_environ(b"not json at all") == b"not json at all"
    plain = b'{"data": {"eventDetail": {"eventName": "CellAddEvent"}}}'
    assert without_environ(plain) == plain
