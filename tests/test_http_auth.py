"""Token authentication of the HTTP API through the real daemon (docs/http-api.md,
Authentication): 401/403,
`__origin__.user` from the token only, per-token allowed_schemas, protected health and metrics,
`telemetryd hash-token`, and the configuration's checks."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telemetryd.auth import hash_token
from telemetryd.config import ConfigError, parse_config
from tests.support.auth_config import ALICE, KERNEL_BOT, auth_section
from tests.support.config_text import file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import RawConnection, jupyter_event
from tests.support.records import records_so_far, wait_for_records
from tests.support.socket_client import CONTENTS, KERNELS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


class Server:
    def __init__(self, daemon: DaemonProcess, workdir: Path) -> None:
        self.events = workdir / "out" / "events.jsonl"
        self.rejected = workdir / "out" / "rejected.jsonl"
        self.daemon = daemon
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{http_port(daemon)}", timeout=30)
        self.port = http_port(daemon)

    def post(self, body: Any, token: str | None = None, scheme: str = "token") -> httpx.Response:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"{scheme} {token}"
        return self.client.post("/api/events", content=json.dumps(body).encode(), headers=headers)


def start(
    tmp_path_factory: pytest.TempPathFactory, name: str, extra: str = "", **flags: bool
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(name)
    sinks = file_sink("archive", workdir / "out" / "events.jsonl") + auth_section(**flags) + extra
    with DaemonProcess(workdir, http_config(workdir, sinks=sinks)) as daemon:
        running = Server(daemon, workdir)
        with running.client:
            yield running
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def required(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`[auth] required = true`, Pioneer's endpoint on; health and metrics left open."""
    yield from start(tmp_path_factory, "auth_required", PIONEER_ON, required=True)


@pytest.fixture(scope="module")
def optional(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Tokens optional for ingest; health and metrics protected."""
    yield from start(tmp_path_factory, "auth_optional", protect_health=True, protect_metrics=True)


PIONEER_ON = "\n[pioneer]\nenabled = true\n"
PIONEER_IS_ON = "POST /api/pioneer is on"
#: The smallest body Pioneer's remote_exporter posts.
PIONEER_BODY: dict[str, Any] = {
    "data": {
        "eventDetail": {
            "eventName": "CellExecuteEvent",
            "eventTime": 1700000000000,
            "eventInfo": {"cells": [{"id": "c1", "index": 0}], "success": True},
        },
        "notebookState": {"sessionID": "s1", "notebookPath": "pioneer.ipynb"},
    },
    "params": None,
    "env": [],
}


def post_pioneer(server: Server, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"token {token}"} if token is not None else {}
    return server.client.post("/api/pioneer", json=PIONEER_BODY, headers=headers)


def record_at(server: Server, path: str) -> dict[str, Any]:
    (record,) = wait_for_records(server.events, lambda r: r.get("path") == path)
    return record


# --- required = true ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "token", "Bearer", "Basic YWxpY2U6cHc=", "alice", "token a b"]
)
def test_no_usable_credentials_is_401_with_www_authenticate(
    required: Server, authorization: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    body = json.dumps(jupyter_event("anon/never")).encode()
    for path in ("/api/events", "/api/events/batch"):
        response = required.client.post(path, content=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="telemetryd"'
        answer = response.json()
        assert set(answer) == {"message", "reason"}
        assert answer["reason"] == "unauthenticated"
    assert not [r for r in records_so_far(required.events) if r.get("path") == "anon/never"]


def test_a_wrong_token_is_403(required: Server) -> None:
    response = required.post(jupyter_event("wrong/never"), "not-a-configured-token")
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
    assert response.json()["reason"] == "forbidden"
    # the hash itself is not a token
    response = required.post(jupyter_event("wrong/never"), hash_token(ALICE))
    assert response.status_code == 403


@pytest.mark.parametrize("scheme", ["token", "Token", "Bearer", "bearer", "BEARER"])
def test_token_and_bearer_set_the_user_from_the_token(required: Server, scheme: str) -> None:
    path = f"ok/{scheme}"
    response = required.post(jupyter_event(path), ALICE, scheme)
    assert response.status_code == 204, response.text
    assert record_at(required, path)["__origin__"] == {
        "transport": "http",
        "user": "alice",
        "remote": "127.0.0.1",
    }


def test_origin_keys_are_user_before_remote(required: Server) -> None:
    required.post(jupyter_event("order/1"), ALICE)
    wait_for_records(required.events, lambda r: r.get("path") == "order/1")
    (line,) = [line for line in required.events.read_text().splitlines() if '"order/1"' in line]
    assert '"__origin__":{"transport":"http","user":"alice","remote":"127.0.0.1"}' in line


def test_keep_alive_requests_with_different_tokens_each_get_their_own_identity(
    required: Server,
) -> None:
    with RawConnection(required.port) as connection:
        for i, (token, expected) in enumerate(
            [(ALICE, 204), (None, 401), ("nope", 403), (ALICE, 204), (KERNEL_BOT, 403)]
        ):
            headers = () if token is None else (("authorization", f"Bearer {token}"),)
            reply = connection.request(
                "POST",
                "/api/events",
                json.dumps(jupyter_event(f"keepalive/{i}")).encode(),
                headers=headers,
            )
            assert reply.status == expected
    for i in (0, 3):
        assert record_at(required, f"keepalive/{i}")["__origin__"]["user"] == "alice"


def test_a_body_cannot_set_the_origin(required: Server) -> None:
    event = jupyter_event("forged/1")
    event["data"]["__origin__"] = {"transport": "http", "user": "root"}
    response = required.post(event, ALICE)
    assert response.status_code == 400
    assert response.json()["telemetryd_reason"] == "reserved_field"
    # top-level keys beside the envelope's are not data either
    response = required.post(jupyter_event("forged/2") | {"user": "root"}, ALICE)
    if response.status_code == 204:
        assert record_at(required, "forged/2")["__origin__"]["user"] == "alice"
    assert not [r for r in records_so_far(required.events) if r.get("path") == "forged/1"]


def test_allowed_schemas_single_event(required: Server) -> None:
    response = required.post(jupyter_event("bot/contents"), KERNEL_BOT)
    assert response.status_code == 403
    answer = response.json()
    assert answer["reason"] == "schema_not_allowed"
    assert "kernel-bot" in answer["message"]
    assert CONTENTS in answer["message"]
    (dead,) = wait_for_records(
        required.rejected,
        lambda r: r["reason"] == "schema_not_allowed" and "bot/contents" in r.get("raw", ""),
    )
    assert dead["__origin__"]["user"] == "kernel-bot"
    kernel = {"schema_id": KERNELS, "version": "1", "data": {"action": "start", "msg": "bot-1"}}
    response = required.post(kernel, KERNEL_BOT)
    assert response.status_code == 204, response.text
    (record,) = wait_for_records(required.events, lambda r: r.get("msg") == "bot-1")
    assert record["__origin__"]["user"] == "kernel-bot"


def test_allowed_schemas_in_a_batch_rejects_only_those_indexes(required: Server) -> None:
    def kernel(i: int) -> dict[str, Any]:
        return {"schema_id": KERNELS, "version": "1", "data": {"action": "start", "msg": f"b-{i}"}}

    events = [
        kernel(0),
        jupyter_event("botbatch/1"),
        kernel(2),
        {"schema_id": KERNELS, "version": "1", "data": {"action": "explode", "msg": "bad"}},
        jupyter_event("botbatch/4"),
        kernel(5),
    ]
    response = required.client.post(
        "/api/events/batch",
        content=b"\n".join(json.dumps(e).encode() for e in events),
        headers={"content-type": "application/x-ndjson", "authorization": f"token {KERNEL_BOT}"},
    )
    assert response.status_code == 207, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (3, 3)
    reasons = [r.get("reason") for r in answer["results"]]
    assert reasons == [
        None,
        "schema_not_allowed",
        None,
        "invalid_data",
        "schema_not_allowed",
        None,
    ]
    assert [r["index"] for r in answer["results"]] == list(range(6))
    assert "kernel-bot" in answer["results"][1]["message"]
    records = wait_for_records(required.events, lambda r: str(r.get("msg", "")).startswith("b-"), 3)
    assert [r["msg"] for r in records] == ["b-0", "b-2", "b-5"]
    assert not [r for r in records_so_far(required.events) if "botbatch" in str(r.get("path"))]
    # alice may send both
    response = required.client.post(
        "/api/events/batch",
        content=json.dumps([jupyter_event("alicebatch/0"), kernel(9)]).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {ALICE}"},
    )
    assert response.status_code == 200, response.text


def test_health_metrics_and_schemas_are_open_by_default(required: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/schemas"):
        assert required.client.get(path).status_code == 200, path


def test_failures_are_counted_in_the_metrics(required: Server) -> None:
    required.post(jupyter_event("counted/never"))
    text = required.client.get("/metrics").text
    (line,) = [
        line
        for line in text.splitlines()
        if line.startswith("telemetryd_source_errors_total") and "unauthenticated" in line
    ]
    assert 'source="http"' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1


# --- required = false, health and metrics protected ---------------------------------------------


def test_optional_auth_anonymous_valid_and_invalid(optional: Server) -> None:
    assert optional.post(jupyter_event("opt/anon")).status_code == 204
    assert record_at(optional, "opt/anon")["__origin__"] == {
        "transport": "http",
        "remote": "127.0.0.1",
    }
    assert optional.post(jupyter_event("opt/alice"), ALICE, "Bearer").status_code == 204
    assert record_at(optional, "opt/alice")["__origin__"]["user"] == "alice"
    response = optional.post(jupyter_event("opt/wrong"), "wrong")
    assert response.status_code == 403
    assert response.json()["reason"] == "forbidden"
    # a scheme that is not ours (a proxy's Basic) is no token: anonymous
    response = optional.client.post(
        "/api/events",
        content=json.dumps(jupyter_event("opt/basic")).encode(),
        headers={"content-type": "application/json", "authorization": "Basic eDp5"},
    )
    assert response.status_code == 204


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_protected_health_and_metrics(optional: Server, path: str) -> None:
    response = optional.client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="telemetryd"'
    assert response.json()["reason"] == "unauthenticated"
    assert optional.client.get(path, headers={"authorization": "token nope"}).status_code == 403
    response = optional.client.get(path, headers={"authorization": f"token {KERNEL_BOT}"})
    assert response.status_code == 200
    assert optional.client.get("/api/schemas").status_code == 200


# --- telemetryd hash-token ----------------------------------------------------------------------


def cli_hash_token(*args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "telemetryd", "hash-token", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_hash_token_generates_a_token_and_its_config_entry(tmp_path: Path) -> None:
    out = cli_hash_token()
    (token,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("token: ")]
    assert len(token) >= 40
    snippet = out[out.index("[[auth.tokens]]") :]
    config = parse_config(snippet.replace('"CHANGE-ME"', '"ci"'))
    (entry,) = config.auth.tokens
    assert entry.hash == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert token not in snippet
    assert cli_hash_token() != out  # a new token each time


def test_hash_token_of_a_given_token() -> None:
    expected = "sha256:" + hashlib.sha256(b"s3cret-token").hexdigest()
    assert cli_hash_token("s3cret-token") == f'hash = "{expected}"\n'
    assert cli_hash_token("-", stdin="s3cret-token\n") == f'hash = "{expected}"\n'


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["sha256:abc", "s3cret", "sha256:" + "A" * 64, "md5:" + "a" * 64, "sha256:" + "g" * 64]
)
def test_a_malformed_hash_names_its_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[[auth.tokens]]\nidentity = "a"\nhash = "{value}"\n')
    assert [key for key, _ in caught.value.problems] == ["auth.tokens[0].hash"]
    assert "sha256:" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[auth]\nrequire = true\n", "auth.require"),
        (
            f'[[auth.tokens]]\nidentity = "a"\nhash = "{hash_token("x")}"\nuser = "b"\n',
            "auth.tokens[0].user",
        ),
        (f'[[auth.tokens]]\nhash = "{hash_token("x")}"\n', "auth.tokens[0].identity"),
        ("[auth]\nrequired = true\n", "auth"),
    ],
)
def test_other_auth_config_errors(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert key in [k for k, _ in caught.value.problems]


def test_pioneer_takes_notebooks_only_from_the_tokens_when_auth_is_required(
    required: Server,
) -> None:
    assert post_pioneer(required).status_code == 401
    assert post_pioneer(required, "wrong").status_code == 403
    assert post_pioneer(required, ALICE).status_code == 204
    (record,) = wait_for_records(
        required.events, lambda r: r.get("notebookPath") == "pioneer.ipynb"
    )
    assert record["__origin__"]["user"] == "alice"


def test_the_start_says_that_pioneer_is_on_and_how_it_is_authenticated(required: Server) -> None:
    (line,) = [line for line in required.daemon.log_lines() if line.get("msg") == PIONEER_IS_ON]
    assert (line["level"], line["authentication"]) == ("info", ["auth.tokens"])


def test_pioneer_is_off_by_default(optional: Server) -> None:
    assert parse_config("").pioneer.enabled is False
    assert post_pioneer(optional, ALICE).status_code == 404


def test_pioneer_without_required_auth_refuses_to_start(tmp_path: Path) -> None:
    config = http_config(tmp_path) + PIONEER_ON
    with DaemonProcess(tmp_path, config, wait_ready=False) as daemon:
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == 2
    first = daemon.stderr().splitlines()[0]
    assert first.startswith(f"telemetryd: error: {daemon.config_path}: pioneer.enabled: ")
    assert "auth.required" in first
    assert "pioneer.allow_anonymous" in first


def test_pioneer_open_to_anyone_only_when_the_operator_says_so(tmp_path: Path) -> None:
    config = http_config(tmp_path) + PIONEER_ON + "allow_anonymous = true\n"
    with DaemonProcess(tmp_path, config) as daemon:
        server = Server(daemon, tmp_path)
        with server.client:
            assert post_pioneer(server).status_code == 204
        (line,) = [line for line in daemon.log_lines() if line.get("msg") == PIONEER_IS_ON]
        assert line["level"] == "warning"
        assert line["authentication"] == "none (pioneer.allow_anonymous)"
        assert daemon.stop() == 0


def test_auth_defaults_to_off() -> None:
    auth = parse_config("").auth
    assert (auth.required, auth.protect_health, auth.protect_metrics, auth.tokens) == (
        False,
        False,
        False,
        [],
    )


def test_sighup_reloads_the_tokens(tmp_path: Path) -> None:
    sinks = file_sink("archive", tmp_path / "out" / "events.jsonl")
    config = http_config(tmp_path, sinks=sinks + auth_section(required=True))
    with DaemonProcess(tmp_path, config) as daemon:
        server = Server(daemon, tmp_path)
        with server.client:
            assert server.post(jupyter_event("reload/0"), ALICE).status_code == 204
            renewed = "renewed-token-0123456789abcdefghijklmnopqrstuvw"
            renewed_config = config.replace(hash_token(ALICE), hash_token(renewed))
            daemon.config_path.write_text(renewed_config.replace('"alice"', '"alice2"'))
            daemon.signal(signal.SIGHUP)
            wait_for(
                lambda: any(line.get("msg") == "tokens reloaded" for line in daemon.log_lines()),
                10,
                "tokens reloaded",
            )
            assert server.post(jupyter_event("reload/1"), ALICE).status_code == 403
            assert server.post(jupyter_event("reload/2"), renewed).status_code == 204
            assert record_at(server, "reload/2")["__origin__"]["user"] == "alice2"
        assert daemon.stop() == 0
