"""A client written for Jupyter Server's POST /api/events gets the same status codes from
telemetryd as from a live Jupyter Server, for the same valid and invalid events (docs/events.md,
docs/http-api.md).

Both servers run for real, side by side; every case sends the same bytes with the same headers
(`Content-Type: application/json`, `Authorization: token …`: telemetryd's auth is off and ignores
the token) to each and compares the answers. The events use schemas both know: Jupyter Server
registers contents_service and kernel_actions itself, and telemetryd ships copies of them.

The Jupyter Server is given an EventLogger handler (a file), as a deployment that records
events has: without one, jupyter_events returns from `emit` before validating, and Jupyter
Server answers 204 to any data at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.config_text import http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.jupyter_server_process import JupyterServerProcess
from tests.support.records import records_so_far, wait_for_records
from tests.support.socket_client import CONTENTS, KERNELS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Servers:
    jupyter: JupyterServerProcess
    jupyter_client: httpx.Client
    jupyter_events: Path  # the Jupyter Server's EventLogger file
    telemetryd: DaemonProcess
    telemetryd_client: httpx.Client
    telemetryd_events: Path  # telemetryd's file sink

    def post(
        self, body: bytes, content_type: str | None = "application/json"
    ) -> tuple[httpx.Response, httpx.Response]:
        """The same request to both: (Jupyter Server's answer, telemetryd's answer)."""
        headers = dict(self.jupyter.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return (
            self.jupyter_client.post("/api/events", content=body, headers=headers),
            self.telemetryd_client.post("/api/events", content=body, headers=headers),
        )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    jupyter_dir = tmp_path_factory.mktemp("jupyter_server")
    jupyter_events = jupyter_dir / "events.jsonl"
    config = (
        f"import logging\nc.EventLogger.handlers = [logging.FileHandler({str(jupyter_events)!r})]\n"
    )
    daemon_dir = tmp_path_factory.mktemp("telemetryd")
    # Both start at once; the Jupyter Server is waited for once telemetryd is ready.
    with (
        JupyterServerProcess(jupyter_dir, config, wait_ready=False) as jupyter,
        DaemonProcess(daemon_dir, http_config(daemon_dir)) as daemon,
    ):
        jupyter.await_ready()
        with (
            jupyter.client() as jupyter_client,
            httpx.Client(base_url=f"http://127.0.0.1:{http_port(daemon)}", timeout=30) as client,
        ):
            yield Servers(
                jupyter,
                jupyter_client,
                jupyter_events,
                daemon,
                client,
                daemon_dir / "out" / "events.jsonl",
            )
        assert daemon.stop() == 0
        assert jupyter.stop_code() == 0


def event(path: str, **changes: Any) -> dict[str, Any]:
    """A valid contents_service event for `path`, with keys replaced (a None value removes it)."""
    body: dict[str, Any] = {
        "schema_id": CONTENTS,
        "version": "1",
        "data": {"action": "save", "path": path},
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def encoded(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


#: (case id, request body). Each valid case's path is unique, to find its records.
#: The few answers that differ on purpose are in DIFFERENT, below.
CASES: list[tuple[str, Any]] = [
    # valid
    ("valid", event("compat/valid.ipynb")),
    ("valid-integer-version", event("compat/int-version.ipynb", version=1)),
    (
        "valid-timestamp-jupyter-form",
        event("compat/ts-jupyter.ipynb", timestamp="2026-11-22T01:30:21+00:00Z"),
    ),
    (
        "valid-timestamp-other-offset",
        event("compat/ts-offset.ipynb", timestamp="2022-05-26T13:50:00+05:00Z"),
    ),
    (
        "valid-kernel-actions",
        {
            "schema_id": KERNELS,
            "version": "1",
            "data": {"action": "start", "msg": "compat/kernel", "kernel_id": "k1"},
        },
    ),
    (
        "valid-optional-property",
        event(
            "compat/copy.ipynb",
            data={"action": "copy", "path": "compat/copy.ipynb", "source_path": "a.ipynb"},
        ),
    ),
    (
        "valid-extra-data-property",
        event("compat/extra.ipynb", data={"action": "save", "path": "compat/extra.ipynb", "x": 1}),
    ),
    ("valid-extra-envelope-keys", event("compat/envelope.ipynb", user="eve", origin={"a": 1})),
    ("valid-surrounding-whitespace", b"\n  " + encoded(event("compat/ws.ipynb")) + b"\n  \n"),
    # missing envelope keys
    ("missing-schema_id", event("compat/x", schema_id=None)),
    ("missing-version", event("compat/x", version=None)),
    ("missing-data", event("compat/x", data=None)),
    ("empty-object", {}),
    # data failing validation
    ("data-bad-enum-action", event("compat/x", data={"action": "explode", "path": "compat/x"})),
    ("data-missing-required-path", event("compat/x", data={"action": "save"})),
    ("data-path-not-a-string", event("compat/x", data={"action": "save", "path": 7})),
    ("data-empty-object", event("compat/x", data={})),
    # data not an object
    ("data-array", event("compat/x", data=[{"action": "save", "path": "compat/x"}])),
    ("data-string", event("compat/x", data="save")),
    ("data-null", {"schema_id": CONTENTS, "version": "1", "data": None}),
    # schema and version
    ("unknown-schema", event("compat/x", schema_id="https://example.org/no/such/schema/v1")),
    ("schema_id-not-a-string", event("compat/x", schema_id=5)),
    ("wrong-version", event("compat/x", version="2")),
    ("wrong-integer-version", event("compat/x", version=2)),
    ("version-float", event("compat/x", version=1.0)),
    ("version-null", {**event("compat/x"), "version": None}),
    ("version-bool", event("compat/x", version=True)),
    # timestamps
    ("timestamp-no-offset", event("compat/x", timestamp="2026-11-22T01:30:21")),
    ("timestamp-garbage", event("compat/x", timestamp="yesterday")),
    ("timestamp-number", event("compat/x", timestamp=1700000000)),
    # bodies that are not one JSON object
    ("body-not-json", b"this is not json"),
    ("body-truncated-json", encoded(event("compat/x"))[:-5]),
    ("body-two-objects", encoded(event("compat/x")) + b"\n" + encoded(event("compat/y"))),
    ("body-json-array", [event("compat/x")]),
    ("body-empty-json-array", []),
    ("body-json-string", "an event"),
    ("body-json-number", 1),
    ("body-json-null", None),
    ("body-empty", b""),
    ("body-whitespace", b"  \n"),
]


@pytest.mark.parametrize(("body"), [case[1] for case in CASES], ids=[case[0] for case in CASES])
def test_same_status_as_jupyter_server(servers: Servers, body: Any) -> None:
    raw = encoded(body)
    jupyter, telemetryd = servers.post(raw)
    jupyter_answer = _describe(jupyter)
    telemetryd_answer = _describe(telemetryd)
    assert telemetryd.status_code == jupyter.status_code, (
        f"Jupyter Server: {jupyter_answer}; telemetryd: {telemetryd_answer}"
    )
    if jupyter.status_code == 204:
        assert jupyter.content == telemetryd.content == b""
        _assert_recorded_by_both(servers, json.loads(raw))
        return
    # An error: JSON with a message from both, in Jupyter Server's shape.
    assert jupyter.headers["content-type"].startswith("application/json"), jupyter_answer
    assert telemetryd.headers["content-type"].startswith("application/json"), telemetryd_answer
    jupyter_body = jupyter.json()
    telemetryd_body = telemetryd.json()
    assert isinstance(telemetryd_body, dict), telemetryd_answer
    assert isinstance(telemetryd_body.get("message"), str), telemetryd_answer
    assert telemetryd_body["message"], telemetryd_answer
    assert set(jupyter_body) <= set(telemetryd_body), (jupyter_answer, telemetryd_answer)
    assert telemetryd_body["reason"] == jupyter_body["reason"], (jupyter_answer, telemetryd_answer)


#: (case id, body, Jupyter Server's status, telemetryd's status): where telemetryd answers
#: otherwise on purpose. docs/http-api.md ("Differences from Jupyter Server") says why.
DIFFERENT: list[tuple[str, Any, int, int]] = [
    # A data key starting with __ could forge record metadata: jupyter_events spreads data
    # beside its own __schema__/__timestamp__, so a "__schema__" in data would overwrite them.
    (
        "data-reserved-key",
        event("compat/x", data={"action": "save", "path": "x", "__x": 1}),
        204,
        400,
    ),
    # Jupyter Server parses timestamps with strptime("%Y-%m-%dT%H:%M:%S%zZ") only: no fractions,
    # and a literal Z after the offset. telemetryd takes RFC 3339 (docs/events.md) and that form.
    (
        "timestamp-rfc3339-z",
        event("compat/rfc3339.ipynb", timestamp="2026-11-22T01:30:21.131970Z"),
        400,
        204,
    ),
    (
        "timestamp-jupyter-events-record-form",
        event("compat/record-form.ipynb", timestamp="2026-11-22T01:30:21.131970+00:00Z"),
        400,
        204,
    ),
    # Jupyter Server fails on a body that is not UTF-8 (500 "Unhandled error").
    ("body-not-utf8", b'{"schema_id": "\xff\xfe"}', 500, 400),
]


@pytest.mark.parametrize(
    ("body", "jupyter_status", "telemetryd_status"),
    [case[1:] for case in DIFFERENT],
    ids=[case[0] for case in DIFFERENT],
)
def test_answers_that_differ_on_purpose(
    servers: Servers, body: Any, jupyter_status: int, telemetryd_status: int
) -> None:
    jupyter, telemetryd = servers.post(encoded(body))
    assert (jupyter.status_code, telemetryd.status_code) == (jupyter_status, telemetryd_status), (
        f"Jupyter Server: {_describe(jupyter)}; telemetryd: {_describe(telemetryd)}"
    )
    if telemetryd.status_code == 204:
        wait_for_records(servers.telemetryd_events, lambda r: r.get("path") == body["data"]["path"])
    else:
        assert telemetryd.json()["reason"] is None
        assert telemetryd.json()["message"]


#: Content-Type values clients send without thinking about it: Jupyter Server ignores the header.
CONTENT_TYPES = [
    None,  # python's http.client, httpx with content=
    "text/plain",  # fetch() with a string body
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",  # curl -d, urllib.request with data=
    "application/json; charset=utf-8",
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_same_status_whatever_default_content_type_the_client_sends(
    servers: Servers, content_type: str | None
) -> None:
    path = f"compat/ct-{content_type}.ipynb"
    jupyter, telemetryd = servers.post(encoded(event(path)), content_type)
    assert (jupyter.status_code, telemetryd.status_code) == (204, 204), _describe(telemetryd)
    _assert_recorded_by_both(servers, event(path))


def _describe(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text!r}"


def _assert_recorded_by_both(servers: Servers, sent: dict[str, Any]) -> None:
    """The accepted event is in the Jupyter Server's EventLogger file and telemetryd's sink."""
    data = sent["data"]

    def same(record: dict[str, Any]) -> bool:
        return record.get("__schema__") == sent["schema_id"] and all(
            record.get(k) == v for k, v in data.items()
        )

    wait_for_records(servers.telemetryd_events, same, timeout=30)
    wait_for(
        lambda: [r for r in records_so_far(servers.jupyter_events) if same(r)],
        30,
        f"the Jupyter Server's record of {data}",
    )


def test_the_cases_are_distinct() -> None:
    names = [case[0] for case in CASES] + [case[0] for case in DIFFERENT]
    assert len(names) == len(set(names))
