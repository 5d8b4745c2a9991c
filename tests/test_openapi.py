"""The served OpenAPI document (telemetryd.sources.http.openapi) against the live daemon.

schemathesis sends generated requests (its examples, coverage and fuzzing phases) to every
operation but the never-ending subscription, and checks that no answer is a server error and
that each is documented: status, media type, headers, body. Answers random requests rarely
get (the transport's limits, authentication, a partly accepted batch, the subscription's own
answers) are provoked one by one and put through the same checks.
"""

from __future__ import annotations

import ast
import datetime
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from telemetryd.auth import hash_token
from telemetryd.config import AuthSettings, PioneerSettings, ServerSettings
from telemetryd.sources.http import app, openapi
from telemetryd.sources.http.app import HttpApi
from telemetryd.sources.http.messages import Route
from telemetryd.sources.http.operations import OPERATIONS
from tests.support.config_text import file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import jupyter_event, parse_reply, read_to_close
from tests.support.socket_client import CONTENTS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SUBSCRIBE = "/api/events/subscribe"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
TOKEN = "openapi-test-token"
#: A token whose allowed_schemas do not include CONTENTS.
LIMITED = "openapi-limited-token"
MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 64 * 1024
IDLE_SECS = 2
MAX_CONNECTIONS = 12

# The package's document, not the daemon's: schemathesis parametrizes the test per operation at
# collection time, before the daemon starts. (schemathesis.pytest.from_fixture, which would
# load it from a fixture, fails on pytest 9.2: it sets `Function._nodeid`, gone from pytest.)
# test_the_served_document_is_valid_openapi_31 checks that the daemon serves this very one.
DOCUMENT = schemathesis.openapi.from_dict(openapi.document())
# The stream never ends: its non-streaming answers are checked by the test_subscribe_* tests.
schema = DOCUMENT.exclude(path=SUBSCRIBE)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """The batch's NDJSON body is documented as a string; a negative case's other value goes
    as its JSON (one line)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "surrogatepass")


class Live:
    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.port = http_port(daemon)
        self.url = f"http://127.0.0.1:{self.port}"


def live_config(workdir: Path) -> str:
    server = f"""
http_max_header_bytes = {MAX_HEADER_BYTES}
http_max_body_bytes = {MAX_BODY_BYTES}
http_idle_timeout_secs = {IDLE_SECS}
http_max_connections = {MAX_CONNECTIONS}
"""
    # Tokens configured, ingest open: a wrong token is 403 everywhere, no token is 401 on
    # /metrics and the subscription, and events without a token are still accepted.
    auth = f"""
[auth]
required = false
protect_metrics = true

[[auth.tokens]]
identity = "tester"
hash = "{hash_token(TOKEN)}"

[[auth.tokens]]
identity = "limited"
hash = "{hash_token(LIMITED)}"
allowed_schemas = ["https://events.telemetryd.org/*"]
"""
    pioneer = "\n[pioneer]\nenabled = true\nallow_anonymous = true\n"
    sinks = file_sink("archive", workdir / "out" / "events.jsonl")
    return http_config(workdir, server=server, sinks=sinks) + auth + pioneer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("openapi")
    with DaemonProcess(workdir, live_config(workdir)) as daemon:
        yield Live(daemon)
        assert daemon.stop() == 0


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written under the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_of_the_live_daemon_is_documented(
    case: schemathesis.Case[Any], live: Live
) -> None:
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=30)


# --- answers provoked one by one ---------------------------------------------------------------


def assert_documented(method: str, path: str, response: httpx.Response, status: int) -> None:
    """`response` has `status` and is an answer the document gives on the operation."""
    assert response.status_code == status, (response.status_code, response.text)
    operation = DOCUMENT[path][method]
    case = operation.Case(path_parameters={"schema_id": "x"} if "{" in path else None)
    # not_a_server_error fails every status outside 2xx-4xx: the 503s and 101 provoked here
    # on purpose are checked for being documented only.
    checks = CHECKS if 200 <= status < 500 else CHECKS[1:]
    case.validate_response(response, checks=checks)


def as_response(method: str, url: str, raw: bytes) -> httpx.Response:
    """A response read off a raw socket, as httpx would have given it."""
    reply = parse_reply(raw)
    return built_response(method, url, reply.status, reply.headers, reply.body)


def built_response(
    method: str, url: str, status: int, headers: Any, content: bytes
) -> httpx.Response:
    response = httpx.Response(
        status, headers=headers, content=content, request=httpx.Request(method, url)
    )
    response.elapsed = datetime.timedelta(0)  # schemathesis reads it; httpx sets it on a send
    return response


def raw_request(live: Live, data: bytes, *, method: str, path: str) -> httpx.Response:
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(data)
        return as_response(method, live.url + path, read_to_close(sock))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def test_accepted_and_partly_accepted_batches(client: httpx.Client) -> None:
    good = jupyter_event("openapi/batch")
    response = client.post("/api/events/batch", json=[good, good])
    assert_documented("POST", "/api/events/batch", response, 200)
    response = client.post("/api/events/batch", json=[good, {"schema_id": "nope"}])
    assert_documented("POST", "/api/events/batch", response, 207)
    response = client.post(
        "/api/events/batch", content=b"{}\n\n", headers={"content-type": "application/x-ndjson"}
    )
    assert_documented("POST", "/api/events/batch", response, 400)
    assert response.json()["reason"] == "all_rejected"
    response = client.post(
        "/api/events/batch", content=b"{}", headers={"content-type": "application/json"}
    )
    assert_documented("POST", "/api/events/batch", response, 400)
    assert response.json()["reason"] == "invalid_batch"


def test_schemas_and_health(client: httpx.Client) -> None:
    assert_documented("GET", "/api/schemas", client.get("/api/schemas"), 200)
    path = "/api/schemas/{schema_id}"
    response = client.get(f"/api/schemas/{quote(CONTENTS, safe='')}")
    assert_documented("GET", path, response, 200)
    assert_documented("GET", path, client.get("/api/schemas/nope"), 404)
    assert_documented("GET", "/healthz", client.get("/healthz"), 200)
    assert_documented("GET", "/readyz", client.get("/readyz"), 200)
    assert_documented("GET", "/api/openapi.json", client.get("/api/openapi.json"), 200)


def test_authentication_answers(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert_documented("GET", "/metrics", response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="telemetryd"'
    assert_documented("GET", "/metrics", client.get("/metrics", headers=bearer(TOKEN)), 200)
    for path in ("/api/schemas", "/healthz", "/readyz", "/metrics", "/api/openapi.json"):
        response = client.get(path, headers={"Authorization": "token wrong"})
        assert_documented("GET", path, response, 403)
    event = jupyter_event("openapi/limited")
    for path in ("/api/events", "/api/events/batch"):
        body = [event] if path.endswith("batch") else event
        response = client.post(path, json=body, headers=bearer("wrong"))
        assert_documented("POST", path, response, 403)
    response = client.post("/api/events", json=event, headers=bearer(LIMITED))
    assert_documented("POST", "/api/events", response, 403)
    assert response.json()["reason"] == "schema_not_allowed"
    response = client.post("/api/events", json=event, headers=bearer(TOKEN))
    assert_documented("POST", "/api/events", response, 204)


@pytest.mark.parametrize("path", ["/api/events", "/api/events/batch", "/api/pioneer"])
def test_other_media_types_are_415(client: httpx.Client, path: str) -> None:
    response = client.post(path, content=b"{}", headers={"content-type": "application/xml"})
    assert_documented("POST", path, response, 415)


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/api/events"), ("POST", "/api/pioneer"), ("GET", "/healthz")]
)
def test_a_body_over_the_limit_is_413(client: httpx.Client, method: str, path: str) -> None:
    body = b"x" * (MAX_BODY_BYTES + 1)
    response = client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert_documented(method, path, response, 413)


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/events"), ("GET", "/readyz")])
def test_headers_over_the_limit_are_431(client: httpx.Client, method: str, path: str) -> None:
    headers = {"x-padding": "x" * MAX_HEADER_BYTES, "content-type": "application/json"}
    response = client.request(method, path, content=b"{}", headers=headers)
    assert_documented(method, path, response, 431)


#: JSON nested deeper than msgspec decodes (it raises RecursionError, not DecodeError).
DEEP = "[" * 2000 + "]" * 2000
#: In range as written, before year 1 once in UTC.
BEFORE_YEAR_1 = "0001-01-01T00:00:00+01:00"


def deep_event() -> str:
    data = f'{{"action": "save", "path": "openapi/deep", "x": {DEEP}}}'
    return f'{{"schema_id": "{CONTENTS}", "version": "1", "data": {data}}}'


@pytest.mark.parametrize(
    ("path", "content_type", "body", "status", "reason"),
    [
        pytest.param(
            "/api/events",
            "application/json",
            json.dumps(jupyter_event("openapi/old", timestamp=BEFORE_YEAR_1)),
            400,
            "invalid_timestamp",
            id="timestamp-out-of-range",
        ),
        pytest.param(
            "/api/events", "application/json", deep_event(), 400, "invalid_json", id="deep-event"
        ),
        pytest.param(
            "/api/events/batch",
            "application/x-ndjson",
            "\n".join([json.dumps(jupyter_event("openapi/ok")), deep_event(), ""]),
            207,
            "invalid_json",
            id="deep-ndjson-line",
        ),
        pytest.param(
            "/api/events/batch",
            "application/x-ndjson",
            "\n".join(
                [
                    json.dumps(jupyter_event("openapi/ok")),
                    json.dumps(jupyter_event("openapi/old", timestamp=BEFORE_YEAR_1)),
                    "",
                ]
            ),
            207,
            "invalid_timestamp",
            id="timestamp-out-of-range-in-batch",
        ),
        pytest.param(
            "/api/events/batch", "application/json", f"[{DEEP}]", 400, None, id="deep-array"
        ),
        pytest.param(
            "/api/pioneer",
            "application/json",
            '{"data": {"eventDetail": {"eventName": "NotebookSaveEvent", "eventTime": 0, '
            f'"eventInfo": {{"x": {DEEP}}}}}}}}}',
            400,
            None,
            id="deep-pioneer",
        ),
    ],
)
def test_hostile_events_are_rejected_not_500(
    client: httpx.Client,
    *,
    path: str,
    content_type: str,
    body: str,
    status: int,
    reason: str | None,
) -> None:
    """Found with this document: these were 500s, the events around them lost with them."""
    response = client.post(path, content=body.encode(), headers={"content-type": content_type})
    assert_documented("POST", path, response, status)
    answer = response.json()
    if status == 207:
        assert answer["accepted"] == 1
        assert answer["results"][1]["reason"] == reason
    elif reason is not None:
        assert answer["telemetryd_reason"] == reason


def test_malformed_http_is_400(live: Live) -> None:
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"
    response = raw_request(live, data, method="GET", path="/healthz")
    assert_documented("GET", "/healthz", response, 400)
    assert response.json()["reason"] == "bad_request"


def test_an_unfinished_request_is_408(live: Live) -> None:
    data = b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    data += b"Content-Length: 100\r\n\r\n{"
    started = time.monotonic()
    response = raw_request(live, data, method="POST", path="/api/events")
    assert time.monotonic() - started >= IDLE_SECS * 0.9
    assert_documented("POST", "/api/events", response, 408)


def test_past_max_connections_is_503_with_retry_after(live: Live) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with ExitStack() as held:
        # Connections busy with a request (their bodies waited for; idle ones would be closed
        # to make room) are held (for at most IDLE_SECS of silence) until a new one is refused;
        # others from earlier tests may still count, so not a fixed number.
        for _ in range(MAX_CONNECTIONS + 8):
            response = raw_request(live, request, method="GET", path="/healthz")
            if response.status_code == 503:
                break
            busy = held.enter_context(
                socket.create_connection(("127.0.0.1", live.port), timeout=30)
            )
            busy.sendall(
                b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
            )
            assert busy.recv(100).startswith(b"HTTP/1.1 100 ")
        assert_documented("GET", "/healthz", response, 503)
        assert response.json()["reason"] == "too_many_connections"


# --- the subscription's answers ------------------------------------------------------------------


def test_subscribe_without_a_token_is_401_and_with_a_wrong_one_403(client: httpx.Client) -> None:
    assert_documented("GET", SUBSCRIBE, client.get(SUBSCRIBE), 401)
    assert_documented("GET", SUBSCRIBE, client.get(SUBSCRIBE, headers=bearer("wrong")), 403)


def test_subscribe_refusals_are_400(client: httpx.Client) -> None:
    response = client.get(SUBSCRIBE, params={"nope": "1"}, headers=bearer(TOKEN))
    assert_documented("GET", SUBSCRIBE, response, 400)
    headers = {**bearer(TOKEN), "Upgrade": "websocket", "Connection": "Upgrade"}
    response = client.get(SUBSCRIBE, headers=headers)  # no Sec-WebSocket-Key
    assert_documented("GET", SUBSCRIBE, response, 400)


def test_subscribe_sse_stream_is_documented(live: Live, client: httpx.Client) -> None:
    params = {"schema_id": "https://events.jupyter.org/jupyter_server/*"}
    with client.stream("GET", SUBSCRIBE, params=params, headers=bearer(TOKEN)) as stream:
        assert stream.status_code == 200
        received = b""
        chunks = stream.iter_raw()

        def a_record_arrived() -> bool:
            nonlocal received
            # Posted until one arrives: the subscription starts with the response head.
            client.post("/api/events", json=jupyter_event("openapi/sse"))
            received += next(chunks)
            return b"event: record" in received

        wait_for(a_record_arrived, 10, "a record on the stream")
        complete = received[: received.rfind(b"\n\n") + 2]
        response = built_response("GET", live.url + SUBSCRIBE, 200, stream.headers, complete)
    assert_documented("GET", SUBSCRIBE, response, 200)


def test_subscribe_websocket_handshake_is_documented(live: Live) -> None:
    data = (
        f"GET {SUBSCRIBE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(data)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    head = head[: head.index(b"\r\n\r\n") + 4]  # a 101 has no body: frames follow
    response = as_response("GET", live.url + SUBSCRIBE, head)
    assert_documented("GET", SUBSCRIBE, response, 101)
    # RFC 6455's own example key and answer.
    assert response.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# --- the document itself --------------------------------------------------------------------


def test_the_served_document_is_valid_openapi_31(client: httpx.Client) -> None:
    response = client.get("/api/openapi.json")
    assert response.headers["content-type"] == "application/json"
    served = response.json()
    assert served == openapi.document()
    assert served["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(served).validate()  # against the OpenAPI 3.1 metaschema
    # The OpenAPI metaschema leaves schema objects unchecked: check them as JSON Schema 2020-12.
    for name, component in served["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(component)
        except jsonschema.SchemaError as e:
            raise AssertionError(f"components/schemas/{name}: {e.message}") from e


def test_every_route_of_the_daemon_is_documented() -> None:
    api = HttpApi(
        ServerSettings(),
        None,  # type: ignore[arg-type]  # routing needs no intake
        workers=[],
        auth=AuthSettings(),
        pioneer=PioneerSettings(enabled=True),
    )
    routed = {(method, path) for path, methods in api._paths.items() for method in methods}
    routed |= {
        (method, prefix + "{schema_id}")
        for prefix, methods in api._prefixes.items()
        for method in methods
    }
    document = openapi.document()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert routed == documented


#: Functions of telemetryd.sources.http.app that answer with a status they are given.
PASSING_ON = {"json_response", "error_response", "_refuse"}


def named_statuses() -> dict[str, set[int]]:
    """The statuses each function of telemetryd.sources.http.app can answer with: those it
    names (the first argument of json_response, error_response or Response), and those of the
    functions and methods it calls or hands on (`self.name`, a module function by name)."""
    tree = ast.parse(Path(app.__file__).read_text())
    functions = {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    names: dict[str, set[int]] = {}
    uses: dict[str, set[str]] = {}
    for name, function in functions.items():
        names[name], uses[name] = set(), set()
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("json_response", "error_response", "Response")
            ):
                status = node.args[0]
                if isinstance(status, ast.Constant) and isinstance(status.value, int):
                    names[name].add(status.value)
                else:  # passed on: the caller's, or authentication's (documented everywhere)
                    assert name in PASSING_ON, f"{name}: a status not written out"
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ) or (isinstance(node, ast.Name) and node.id in functions):
                uses[name].add(node.attr if isinstance(node, ast.Attribute) else node.id)
    reachable: dict[str, set[int]] = {}
    for name in functions:
        seen, todo, statuses = {name}, [name], set()
        while todo:
            current = todo.pop()
            statuses |= names.get(current, set())
            for used in uses.get(current, set()) - seen:
                seen.add(used)
                todo.append(used)
        reachable[name] = statuses
    return reachable


def operation_handlers() -> dict[str, str]:
    """operationId -> the HttpApi method that answers it, from the table HttpApi routes by."""
    tree = ast.parse(Path(app.__file__).read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "handlers"
            and isinstance(node.value, ast.Dict)
        ):
            return {
                ast.literal_eval(key): value.attr
                for key, value in zip(node.value.keys, node.value.values, strict=True)
                if key is not None and isinstance(value, ast.Attribute)
            }
    raise AssertionError("no `handlers` table in HttpApi.__init__")


def test_every_status_a_handler_answers_with_is_documented() -> None:
    """The route table and the handlers' code cannot drift apart: a status a handler (or what it
    calls) can answer with is documented on its operation."""
    statuses = named_statuses()
    handlers = operation_handlers()
    assert set(handlers) == {operation.operation_id for operation in OPERATIONS}
    paths = openapi.document()["paths"]
    for operation in OPERATIONS:
        answers = set(statuses[handlers[operation.operation_id]])
        if operation.ingest:
            answers |= statuses["_within_budget"]
        documented = {
            int(status) for status in paths[operation.path][operation.method.lower()]["responses"]
        }
        assert answers, operation.operation_id  # the code was read
        assert answers <= documented, (operation.operation_id, answers - documented)


def test_documented_request_media_types_are_routed() -> None:
    api = HttpApi(
        ServerSettings(),
        None,  # type: ignore[arg-type]  # routing needs no intake
        workers=[],
        pioneer=PioneerSettings(enabled=True),
    )
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            route = api.route(method.upper(), path.replace("{schema_id}", "x"), None)
            body = operation.get("requestBody")
            if body is None:
                assert isinstance(route, Route), (method, path)
                continue
            for kind in body["content"]:
                assert isinstance(api.route(method.upper(), path, kind), Route), (kind, path)


def test_every_operation_is_described() -> None:
    document = openapi.document()
    assert len(document["info"]["description"]) > 200
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation["summary"], where
            assert len(operation["description"]) > 60, where
            assert operation["operationId"], where
            assert {"400", "403", "413", "431", "500", "503"} <= set(operation["responses"]), where


def test_subscribe_is_documented_as_agreed() -> None:
    operation = openapi.document()["paths"][SUBSCRIBE]["get"]
    (parameter,) = operation["parameters"]
    assert parameter["name"] == "schema_id"
    assert parameter["in"] == "query"
    assert not parameter["required"]
    assert parameter["explode"] is True  # repeatable: ?schema_id=a&schema_id=b
    responses = operation["responses"]
    assert set(responses) >= {"101", "200", "400", "401", "403", "503"}
    assert "Sec-WebSocket-Accept" in responses["101"]["headers"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    assert responses["503"]["headers"]["Retry-After"]["required"] is True
    description = operation["description"]
    for words in ("Upgrade: websocket", "event: record", "event: dropped", ": keepalive"):
        assert words in description
