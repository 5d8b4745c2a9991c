"""The HTTP API through the real daemon (docs/events.md, docs/http-api.md): Jupyter Server's POST
/api/events, batches, schemas, health, and the JSON errors; every event counted in the file sink."""

from __future__ import annotations

import json
import os
import pwd
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetryd.integrations.pioneer import PIONEER_EVENTS
from telemetryd.integrations.pioneer import schema_id as pioneer_schema_id
from tests.support.config_text import daemon_config, file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import RawConnection, jupyter_event
from tests.support.records import records_so_far, wait_for_records
from tests.support.socket_client import CONTENTS, KERNELS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REJECTED = "https://events.telemetryd.org/telemetryd/rejected_event/v1"
SHIPPED = {
    CONTENTS,
    KERNELS,
    "https://events.jupyter.org/jupyter_server/gateway_client/v1",
    "https://schema.jupyter.org/jupyterhub/events/server-action",
    REJECTED,
    *(pioneer_schema_id(name) for name in PIONEER_EVENTS),
}
HTTP_ORIGIN = {"transport": "http", "remote": "127.0.0.1"}


class Server:
    def __init__(self, daemon: DaemonProcess, workdir: Path) -> None:
        self.daemon = daemon
        self.events = workdir / "out" / "events.jsonl"
        self.rejected = workdir / "out" / "rejected.jsonl"
        self.port = http_port(daemon)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def records(self, prefix: str) -> list[dict[str, Any]]:
        return [r for r in records_so_far(self.events) if str(r.get("path", "")).startswith(prefix)]

    def wait_records(self, prefix: str, count: int) -> list[dict[str, Any]]:
        """The records whose path starts with `prefix`, once there are at least `count`."""

        def enough() -> list[dict[str, Any]] | None:
            found = self.records(prefix)
            return found if len(found) >= count else None

        return wait_for(enough, 10, f"{count} records under {prefix}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("http_api")
    sinks = file_sink("archive", workdir / "out" / "events.jsonl") + file_sink(
        "kernels",
        workdir / "out" / "kernels.jsonl",
        'include = ["https://events.jupyter.org/jupyter_server/kernel_actions/*"]',
    )
    with DaemonProcess(workdir, http_config(workdir, sinks=sinks)) as daemon:
        running = Server(daemon, workdir)
        with running.client:
            yield running
        assert daemon.stop() == 0


def post_event(
    server: Server, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    return server.client.post("/api/events", content=body, headers={"content-type": content_type})


# --- POST /api/events, as Jupyter Server takes it ------------------------------------------------


def test_jupyter_servers_exact_request_is_204_and_stored_with_an_http_origin(
    server: Server,
) -> None:
    event = jupyter_event("jupyter/a.ipynb", timestamp="2026-11-22T01:30:21.131970Z")
    response = server.client.post(
        "/api/events",
        content=json.dumps(event).encode(),
        headers={"Authorization": "token x", "Content-Type": "application/json"},
    )
    assert response.status_code == 204
    assert response.content == b""
    (record,) = wait_for_records(server.events, lambda r: r.get("path") == "jupyter/a.ipynb")
    assert record == {
        "__timestamp__": "2026-11-22T01:30:21.131970Z",
        "__schema__": CONTENTS,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        "__origin__": HTTP_ORIGIN,
        "action": "save",
        "path": "jupyter/a.ipynb",
    }


def test_charset_utf8_is_accepted(server: Server) -> None:
    body = json.dumps(jupyter_event("charset/é.ipynb"), ensure_ascii=False).encode()
    response = post_event(server, body, "Application/JSON; charset=UTF-8")
    assert response.status_code == 204
    wait_for_records(server.events, lambda r: r.get("path") == "charset/é.ipynb")


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        (jupyter_event("bad/data", action="explode"), "invalid_data", "data.action must be one of"),
        (
            jupyter_event("bad/schema") | {"schema_id": "https://example.org/nope"},
            "unknown_schema",
            "is not registered",
        ),
        (jupyter_event("bad/version") | {"version": "7"}, "unknown_version", "registered versions"),
        ({"schema_id": CONTENTS, "data": {}}, "invalid_envelope", "version"),
        (jupyter_event("bad/time", timestamp="yesterday"), "invalid_timestamp", "yesterday"),
        ('{"schema_id": "x", "version": "1", "data": {', "invalid_json", "malformed JSON"),
        ("", "empty_line", "empty"),
    ],
)
def test_invalid_events_are_400_in_jupyter_servers_shape_and_dead_lettered(
    server: Server, body: Any, reason: str, words: str
) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = post_event(server, raw)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert set(answer) == {"message", "reason", "telemetryd_reason"}
    assert answer["reason"] is None  # as Jupyter Server answers
    assert answer["telemetryd_reason"] == reason
    assert words in answer["message"]
    (dead,) = wait_for_records(
        server.rejected, lambda r: r.get("raw") == raw.decode() and r["reason"] == reason
    )
    assert dead["__origin__"] == HTTP_ORIGIN
    assert dead["message"] == answer["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-ndjson",
        "application/json; charset=latin-1",
        "application/xml",
        "multipart/form-data; boundary=x",
    ],
)
def test_other_media_types_are_415(server: Server, content_type: str | None) -> None:
    """JSON, or what clients send by default (none, text/plain, form: see the Jupyter Server
    comparison); anything else is refused before the body is read."""
    headers = {} if content_type is None else {"content-type": content_type}
    body = json.dumps(jupyter_event("media/never")).encode()
    response = server.client.post("/api/events", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["reason"] == "unsupported_media_type"
    assert not server.records("media/")


# --- routing errors -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api", "/api/events/", "/api/event", "/metricsz"])
def test_unknown_paths_are_404_json(server: Server, path: str) -> None:
    response = server.client.get(path)
    assert response.status_code == 404
    assert response.json() == {"message": f"no endpoint at {path}", "reason": "not_found"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/events", "POST"),
        ("PUT", "/api/events/batch", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/api/schemas", "GET"),
        ("POST", f"/api/schemas/{quote(CONTENTS, safe='')}", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_allow(
    server: Server, method: str, path: str, allow: str
) -> None:
    response = server.client.request(method, path, content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["reason"] == "method_not_allowed"


# --- keep-alive ------------------------------------------------------------------------------


def test_many_requests_on_one_connection_each_stored_once(server: Server) -> None:
    count = 300
    with RawConnection(server.port) as connection:
        for i in range(count):
            reply = connection.request(
                "POST", "/api/events", json.dumps(jupyter_event(f"keepalive/{i}")).encode()
            )
            assert reply.status == 204, reply
            if i % 50 == 0:  # errors and reads keep the connection too
                assert connection.request("GET", "/nope").status == 404
                assert connection.request("GET", "/healthz").status == 200
    records = server.wait_records("keepalive/", count)
    assert Counter(r["path"] for r in records) == {f"keepalive/{i}": 1 for i in range(count)}


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    count = 50
    requests = b""
    for i in range(count):
        body = json.dumps(jupyter_event(f"pipelined/{i}")).encode()
        requests += (
            b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(requests)
        received = b""
        while received.count(b"HTTP/1.1 204") < count:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert received.count(b"HTTP/1.1 ") == count
    records = server.wait_records("pipelined/", count)
    assert [r["path"] for r in records] == [f"pipelined/{i}" for i in range(count)]


# --- POST /api/events/batch -----------------------------------------------------------------


def test_an_ndjson_batch_of_1000_with_invalid_events_is_207_with_exact_results(
    server: Server,
) -> None:
    bad: dict[int, tuple[str, bytes]] = {
        3: ("invalid_data", json.dumps(jupyter_event("batch/3", action="explode")).encode()),
        10: ("invalid_json", b'{"schema_id":'),
        500: ("empty_line", b""),
        998: ("invalid_envelope", b"[1, 2]"),
        999: ("unknown_schema", json.dumps(jupyter_event("batch/999", schema_id="x:y")).encode()),
    }
    lines = [
        bad[i][1] if i in bad else json.dumps(jupyter_event(f"batch/{i}")).encode()
        for i in range(1000)
    ]
    response = server.client.post(
        "/api/events/batch",
        content=b"\n".join(lines) + b"\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 207
    answer = response.json()
    assert answer["accepted"] == 995
    assert answer["rejected"] == 5
    assert len(answer["results"]) == 1000
    for i, result in enumerate(answer["results"]):
        if i in bad:
            assert result["index"] == i
            assert result["status"] == "rejected"
            assert result["reason"] == bad[i][0]
            assert result["message"]
        else:
            assert result == {"index": i, "status": "accepted"}
    records = server.wait_records("batch/", 995)
    assert [r["path"] for r in records] == [f"batch/{i}" for i in range(1000) if i not in bad]
    assert all(r["__origin__"] == HTTP_ORIGIN for r in records)


def test_a_json_array_batch(server: Server) -> None:
    events = [jupyter_event(f"array/{i}") for i in range(20)]
    response = server.client.post("/api/events/batch", json=events)
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 20,
        "rejected": 0,
        "results": [{"index": i, "status": "accepted"} for i in range(20)],
    }
    events[7]["data"]["action"] = "explode"
    events = [{"not": "an event"}, *events]
    response = server.client.post("/api/events/batch", json=events)
    assert response.status_code == 207
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (19, 2)
    assert [r["index"] for r in answer["results"] if r["status"] == "rejected"] == [0, 8]
    records = server.wait_records("array/", 39)
    assert Counter(r["path"] for r in records) == {
        f"array/{i}": 1 if i == 7 else 2 for i in range(20)
    }


@pytest.mark.parametrize("body", [b'{"schema_id": "x"}', b"[1, 2", b"not json", b""])
def test_an_unreadable_json_batch_is_400(server: Server, body: bytes) -> None:
    response = server.client.post(
        "/api/events/batch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["reason"] == "invalid_batch"
    assert "not a JSON array" in answer["message"]


def test_a_batch_with_nothing_valid_is_400_with_the_results(server: Server) -> None:
    response = server.client.post(
        "/api/events/batch",
        content=b"{}\nnope\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["reason"] == "all_rejected"
    assert (answer["accepted"], answer["rejected"]) == (0, 2)
    assert [r["reason"] for r in answer["results"]] == ["invalid_envelope", "invalid_json"]


def test_an_empty_batch_is_200(server: Server) -> None:
    response = server.client.post(
        "/api/events/batch", content=b"", headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "rejected": 0, "results": []}


# --- GET /api/schemas -----------------------------------------------------------------------


def test_schemas_lists_the_shipped_schemas_with_properties_and_sinks(server: Server) -> None:
    response = server.client.get("/api/schemas")
    assert response.status_code == 200
    schemas = {s["$id"]: s for s in response.json()["schemas"]}
    assert set(schemas) == SHIPPED
    contents = schemas[CONTENTS]
    assert contents["sinks"] == ["archive"]
    assert schemas[KERNELS]["sinks"] == ["archive", "kernels"]
    (version,) = contents["versions"]
    assert version["version"] == "1"
    assert version["title"] == "Contents Manager activities"
    assert version["description"].startswith("Record actions on files")
    assert version["personal-data"] is True
    assert version["allowed"] is True
    properties = {p["name"]: p for p in version["properties"]}
    assert set(properties) == {"action", "path", "source_path"}
    assert properties["action"]["required"] is True
    assert properties["action"]["type"] == "string"
    assert properties["source_path"]["required"] is False
    assert "Action performed by the ContentsManager API" in properties["action"]["description"]
    assert all(
        set(p) >= {"name", "type", "description", "categories", "required"}
        for p in properties.values()
    )


def test_one_schema_by_its_url_encoded_id(server: Server) -> None:
    response = server.client.get(f"/api/schemas/{quote(KERNELS, safe='')}")
    assert response.status_code == 200
    schema = response.json()
    assert schema["$id"] == KERNELS
    assert schema["sinks"] == ["archive", "kernels"]
    properties = {p["name"] for p in schema["versions"][0]["properties"]}
    assert properties >= {"action", "msg", "kernel_id", "kernel_name", "status", "status_code"}


def test_an_unknown_schema_is_404_json(server: Server) -> None:
    response = server.client.get(f"/api/schemas/{quote('https://example.org/nope', safe='')}")
    assert response.status_code == 404
    assert response.json()["reason"] == "unknown_schema"


# --- health ---------------------------------------------------------------------------------


def test_healthz_and_readyz(server: Server) -> None:
    response = server.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = server.client.get("/readyz")
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "ready"
    assert [s["name"] for s in answer["sinks"]] == ["archive", "kernels", "dead-letter"]
    assert all(s["ready"] and s["healthy"] for s in answer["sinks"])


def test_metrics_count_what_was_accepted_and_rejected(server: Server) -> None:
    def value(families: dict[str, Any], name: str, **labels: str) -> float:
        for sample in families[name]:
            if sample.name in (name, f"{name}_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return float(sample.value)
        raise AssertionError(f"{name} {labels} not exposed")

    def scrape() -> dict[str, Any]:
        response = server.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {f.name: f.samples for f in text_string_to_metric_families(response.text)}

    before = scrape()
    ok = {"schema_id": CONTENTS, "version": "1", "data": {"action": "save", "path": "metrics-1"}}
    bad = {"schema_id": CONTENTS, "version": "1", "data": {"action": "explode", "path": "m"}}
    assert server.client.post("/api/events", json=ok).status_code == 204
    assert server.client.post("/api/events", json=bad).status_code == 400
    after = scrape()
    name = "telemetryd_source_accepted_events"
    assert value(after, name, source="http") == value(before, name, source="http") + 1
    name = "telemetryd_source_rejected_events"
    rejected_before = (
        value(before, name, source="http", reason="invalid_data")
        if any(s.labels.get("reason") == "invalid_data" for s in before.get(name, []))
        else 0.0
    )
    assert value(after, name, source="http", reason="invalid_data") == rejected_before + 1
    assert "telemetryd_sink_latency_seconds" in after
    assert value(after, "telemetryd_sink_healthy", sink="archive") == 1


def test_http_on_a_unix_socket_stamps_the_peer_credentials(tmp_path: Path) -> None:
    """`http_unix_socket` alone (no TCP): the kernel's peer credentials become __origin__."""
    sock = tmp_path / "run" / "http.sock"
    config = daemon_config(
        tmp_path,
        server=f'http_unix_socket = "{sock}"',
        sinks=file_sink("archive", tmp_path / "out" / "events.jsonl"),
    )
    with DaemonProcess(tmp_path, config) as daemon:
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://telemetryd", timeout=30) as client:
            answer = client.post("/api/events", json=jupyter_event("uds/a.ipynb"))
            assert answer.status_code == 204
            assert client.get("/healthz").json() == {"status": "ok"}
        records = wait_for_records(tmp_path / "out" / "events.jsonl", lambda r: True)
        assert daemon.stop() == 0
    assert not sock.exists()  # removed on stop
    origin = records[0]["__origin__"]
    assert origin["transport"] == "http"
    assert (origin["uid"], origin["gid"], origin["pid"]) == (os.getuid(), os.getgid(), os.getpid())
    assert origin["user"] == pwd.getpwuid(os.getuid()).pw_name
