"""The real JupyterLab Pioneer as telemetryd's client (docs/http-api.md, POST /api/pioneer).

A live Jupyter Server runs the jupyterlab_pioneer server extension (enabled by its pip install in
{sys.prefix}/etc/jupyter), configured with `remote_exporter`s whose url is telemetryd's
/api/pioneer. The test does what Pioneer's browser extension does: it reads the exporters from
GET /jupyterlab-pioneer/config (giving each the global activeEvents unless it has its own), builds
the event as lib/producer.js does, and POSTs `{"eventDetail", "notebookState", "exporter"}` to
/jupyterlab-pioneer/export, where the server extension's remote_exporter forwards it to
telemetryd and answers with telemetryd's status code and body.

Two daemons with [pioneer] on and open (allow_anonymous: the exporter sends no token): one with
keep_environ off (every event), one with keep_environ on (only NotebookOpenEvent, through an
exporter with its own activeEvents).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from telemetryd.integrations.pioneer import schema_id, timestamp_of
from tests.support.config_text import file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.jupyter_server_process import JupyterServerProcess
from tests.support.records import wait_for_records

pytestmark = pytest.mark.integration

WORKSPACE_ID = "ws-7f3a"
SECRET = "not-for-analysts-0b1c"  # an environment variable of the Jupyter Server process
PARAMS = {"course": "telemetry-101"}
HTTP_ORIGIN = {"transport": "http", "remote": "127.0.0.1"}
ACTIVE_EVENTS = [
    {"name": name, "logWholeNotebook": name == "NotebookSaveEvent"}
    for name in ("CellExecuteEvent", "CellEditEvent", "NotebookOpenEvent", "NotebookSaveEvent")
]
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": 1,
            "id": "c1",
            "metadata": {},
            "outputs": [],
            "source": "x = 1",
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@dataclass
class Daemon:
    process: DaemonProcess
    events: Path
    rejected: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{http_port(self.process)}/api/pioneer"


@dataclass
class Setup:
    jupyter: JupyterServerProcess
    client: httpx.Client  # on the Jupyter Server, with its token, as the browser's requests
    default: Daemon
    environ: Daemon  # [pioneer] keep_environ = true
    exporters: list[dict[str, Any]]  # as the browser extension holds them

    def publish(
        self,
        detail: dict[str, Any],
        state: dict[str, Any],
        exporters: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Pioneer's `publishEvent` for each exporter listening to the event; their results."""
        if exporters is None:
            exporters = [
                e
                for e in self.exporters
                if detail["eventName"] in [a["name"] for a in e["activeEvents"]]
            ]
        results = []
        for exporter in exporters:
            response = self.client.post(
                "/jupyterlab-pioneer/export",
                json={"eventDetail": detail, "notebookState": state, "exporter": exporter},
            )
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            results.append(result)
        return results


def _daemon(workdir: Path, pioneer: str) -> DaemonProcess:
    """A daemon serving POST /api/pioneer without tokens (Pioneer's remote_exporter sends none)."""
    sinks = file_sink("archive", workdir / "out" / "events.jsonl")
    pioneer = f"\n[pioneer]\nenabled = true\nallow_anonymous = true\n{pioneer}"
    return DaemonProcess(workdir, http_config(workdir, sinks=sinks) + pioneer)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    default_dir = tmp_path_factory.mktemp("telemetryd")
    environ_dir = tmp_path_factory.mktemp("telemetryd_keep_environ")
    with (
        _daemon(default_dir, "") as default_process,
        _daemon(environ_dir, "keep_environ = true\n") as environ_process,
    ):
        default = Daemon(
            default_process,
            default_dir / "out" / "events.jsonl",
            default_dir / "out" / "rejected.jsonl",
        )
        environ = Daemon(
            environ_process,
            environ_dir / "out" / "events.jsonl",
            environ_dir / "out" / "rejected.jsonl",
        )
        exporters = [
            {
                "type": "remote_exporter",
                "args": {
                    "id": "telemetryd",
                    "url": default.url,
                    "params": PARAMS,
                    "env": ["WORKSPACE_ID"],
                },
            },
            {
                "type": "remote_exporter",
                "args": {"id": "telemetryd-environ", "url": environ.url, "env": ["WORKSPACE_ID"]},
                "activeEvents": [{"name": "NotebookOpenEvent", "logWholeNotebook": False}],
            },
        ]
        config = (
            f"c.JupyterLabPioneerApp.activeEvents = {ACTIVE_EVENTS!r}\n"
            f"c.JupyterLabPioneerApp.exporters = {exporters!r}\n"
        )
        jupyter_dir = tmp_path_factory.mktemp("jupyter_server")
        env = {"WORKSPACE_ID": WORKSPACE_ID, "TELEMETRYD_TEST_SECRET": SECRET}
        with (
            JupyterServerProcess(jupyter_dir, config, env=env) as jupyter,
            jupyter.client() as client,
        ):
            served = client.get("/jupyterlab-pioneer/config")
            assert served.status_code == 200, f"{served.text}\n{jupyter.log()}"
            yield Setup(jupyter, client, default, environ, _browser_exporters(served.json()))
            assert jupyter.stop_code() == 0
        assert default_process.stop() == 0
        assert environ_process.stop() == 0


def _browser_exporters(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Pioneer's loadExporters: with global activeEvents, each exporter without its own gets
    them; without, only exporters with their own activeEvents are kept."""
    active = config["activeEvents"]
    exporters: list[dict[str, Any]] = config["exporters"]
    if active:
        return [e if e.get("activeEvents") else {**e, "activeEvents": active} for e in exporters]
    return [e for e in exporters if e.get("activeEvents")]


def _state(path: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    """notebookState as the browser sends it, with a fresh session id."""
    return {"sessionID": str(uuid.uuid4()), "notebookPath": path, "notebookContent": content}


def _detail(name: str, info: dict[str, Any] | None) -> dict[str, Any]:
    return {"eventName": name, "eventTime": int(time.time() * 1000), "eventInfo": info}


def _assert_delivered(results: list[dict[str, Any]], exporter_id: str) -> None:
    """remote_exporter's result: telemetryd's 204, through the Jupyter Server."""
    assert [r["exporter"] for r in results] == [exporter_id], results
    assert results[0]["message"] == {"code": 204, "reason": "No Content", "body": ""}, results


def _record(daemon: Daemon, session: str) -> dict[str, Any]:
    (record,) = wait_for_records(daemon.events, lambda r: r.get("sessionID") == session, timeout=30)
    return record


def _assert_record(
    record: dict[str, Any],
    detail: dict[str, Any],
    state: dict[str, Any],
    params: dict[str, Any] | None,
) -> None:
    assert record["__schema__"] == schema_id(detail["eventName"])
    assert record["__schema__"] == (
        f"https://events.telemetryd.org/jupyterlab_pioneer/{detail['eventName']}/v1"
    )
    assert record["__schema_version__"] == "1"
    assert record["__timestamp__"] == timestamp_of(detail["eventTime"])
    assert record["__origin__"] == HTTP_ORIGIN
    assert record["eventName"] == detail["eventName"]
    assert record["eventTime"] == detail["eventTime"]
    assert record["sessionID"] == state["sessionID"]
    assert record["notebookPath"] == state["notebookPath"]
    assert record["notebookContent"] == state["notebookContent"]
    assert record["params"] == params
    assert record["workspaceId"] == WORKSPACE_ID


# --- the tests ---------------------------------------------------------------------------------


def test_the_extension_serves_the_configured_exporters(setup: Setup) -> None:
    version = setup.client.get("/jupyterlab-pioneer/version")
    assert version.status_code == 200
    assert [e["args"]["id"] for e in setup.exporters] == ["telemetryd", "telemetryd-environ"]
    assert setup.exporters[0]["activeEvents"] == ACTIVE_EVENTS


CELL = {"id": "c1", "index": 0, "type": "code", "metadata": None}
EVENTS: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
    ("CellExecuteEvent", {"cells": [CELL], "success": True, "kernelError": None}, None),
    (
        "CellExecuteEvent",
        {
            "cells": [CELL],
            "success": False,
            "kernelError": {
                "errorName": "NameError",
                "errorValue": "name 'y' is not defined",
                "traceback": ["\u001b[0;31mNameError\u001b[0m: name 'y' is not defined"],
            },
        },
        None,
    ),
    (
        "CellEditEvent",
        {"index": 0, "doc": ["x = 1", "print(x)"], "type": "code", "metadata": None},
        None,
    ),
    ("CellEditEvent", {"index": 0, "changes": [5, [0, "", "y = 2"]], "type": "code"}, None),
    ("NotebookSaveEvent", None, NOTEBOOK),  # logWholeNotebook: the whole notebook is sent
]


@pytest.mark.parametrize(
    ("name", "info", "content"),
    EVENTS,
    ids=["execute-ok", "execute-error", "edit-doc", "edit-changes", "save-whole-notebook"],
)
def test_events_reach_telemetryd_under_their_schema(
    setup: Setup, name: str, info: dict[str, Any] | None, content: dict[str, Any] | None
) -> None:
    detail = _detail(name, info)
    state = _state("work/analysis.ipynb", content)
    _assert_delivered(setup.publish(detail, state), "telemetryd")
    record = _record(setup.default, state["sessionID"])
    _assert_record(record, detail, state, PARAMS)
    assert record["eventInfo"] == info


def test_a_notebook_without_a_session_is_recorded_with_null_session(setup: Setup) -> None:
    # The browser's JSON.stringify drops an undefined sessionID: the key is absent.
    path = f"no-session/{uuid.uuid4()}.ipynb"
    detail = _detail("NotebookSaveEvent", None)
    _assert_delivered(
        setup.publish(detail, {"notebookPath": path, "notebookContent": None}), "telemetryd"
    )
    (record,) = wait_for_records(
        setup.default.events, lambda r: r.get("notebookPath") == path, timeout=30
    )
    assert record["sessionID"] is None
    assert record["eventInfo"] is None


def test_notebook_open_environ_is_removed_by_default_and_kept_when_configured(
    setup: Setup,
) -> None:
    # Pioneer's NotebookOpenEvent carries GET /jupyterlab-pioneer/environ: the server's os.environ.
    environ = setup.client.get("/jupyterlab-pioneer/environ").json()
    assert environ["TELEMETRYD_TEST_SECRET"] == SECRET
    assert environ["WORKSPACE_ID"] == WORKSPACE_ID
    detail = _detail("NotebookOpenEvent", {"environ": environ})
    state = _state("work/opened.ipynb")
    results = setup.publish(detail, state)
    assert [r["exporter"] for r in results] == ["telemetryd", "telemetryd-environ"]
    for result in results:
        assert result["message"] == {"code": 204, "reason": "No Content", "body": ""}, results

    removed = _record(setup.default, state["sessionID"])
    _assert_record(removed, detail, state, PARAMS)
    assert removed["eventInfo"] == {"environ_removed": True}
    assert SECRET not in setup.default.events.read_text()

    kept = _record(setup.environ, state["sessionID"])
    _assert_record(kept, detail, state, None)  # this exporter has no params
    assert kept["eventInfo"] == {"environ": environ}


def test_an_unknown_event_gets_telemetryds_400_and_is_dead_lettered(setup: Setup) -> None:
    session = str(uuid.uuid4())
    detail = _detail("NotebookExplodeEvent", {"boom": True})
    (result,) = setup.publish(
        detail, {"sessionID": session, "notebookPath": "x.ipynb"}, [setup.exporters[0]]
    )
    assert result["exporter"] == "telemetryd"
    message = result["message"]
    assert message["code"] == 400, result
    assert message["reason"] == "Bad Request"
    answer = httpx.Response(400, content=message["body"]).json()
    assert answer["reason"] == "invalid_pioneer"
    assert "unknown JupyterLab Pioneer event 'NotebookExplodeEvent'" in answer["message"]
    (dead,) = wait_for_records(
        setup.default.rejected, lambda r: session in str(r.get("raw")), timeout=30
    )
    assert dead["reason"] == "invalid_pioneer"
    assert dead["message"] == answer["message"]
    assert dead["__origin__"] == HTTP_ORIGIN


def test_an_event_its_schema_refuses_gets_jupyter_servers_400_shape(setup: Setup) -> None:
    # A known event whose eventInfo lacks what its schema requires: rejected as POST /api/events
    # rejects invalid data (reason null, telemetryd's code beside).
    session = str(uuid.uuid4())
    detail = _detail("CellExecuteEvent", {"cells": [CELL]})  # no `success`
    (result,) = setup.publish(detail, {"sessionID": session, "notebookPath": "x.ipynb"})
    assert result["message"]["code"] == 400, result
    answer = httpx.Response(400, content=result["message"]["body"]).json()
    assert answer["reason"] is None
    assert answer["telemetryd_reason"] == "invalid_data"
    assert "success" in answer["message"]
    (dead,) = wait_for_records(
        setup.default.rejected, lambda r: session in str(r.get("raw")), timeout=30
    )
    assert dead["reason"] == "invalid_data"


def test_a_refused_notebook_open_event_keeps_no_environ_in_the_dead_letter(setup: Setup) -> None:
    # keep_environ is off: the server's environment (secrets included) must not be stored, in
    # the events nor in the dead-letter sink, also when the body is refused before unwrapping.
    session = str(uuid.uuid4())
    environ = setup.client.get("/jupyterlab-pioneer/environ").json()
    detail = _detail("NotebookOpenEvent", {"environ": environ}) | {"eventTime": -1}
    (result,) = setup.publish(
        detail, _state("work/opened.ipynb") | {"sessionID": session}, [setup.exporters[0]]
    )
    assert result["message"]["code"] == 400, result
    answer = httpx.Response(400, content=result["message"]["body"]).json()
    assert answer["reason"] == "invalid_pioneer"
    (dead,) = wait_for_records(
        setup.default.rejected, lambda r: session in str(r.get("raw")), timeout=30
    )
    assert dead["reason"] == "invalid_pioneer"
    assert SECRET not in str(dead), "the server's environ was written to the dead-letter sink"
