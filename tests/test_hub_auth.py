"""[auth.jupyterhub] at unit level: the answer cache and its expiry, the negative cache, the
hub that cannot be asked (503 with Retry-After, never cached, never let through), one call per
token however many requests wait for it, the bound on calls in flight, kinds, allowed users,
groups and scopes, reloads, and the configuration's errors.

A live JupyterHub cannot be told to answer 502, hang, or count the calls it gets, so these tests
ask StubHub: a real HTTP server on loopback that answers GET /hub/api/user the way JupyterHub
does, and nothing more. tests/test_jupyterhub_live.py runs the same paths against a real hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from telemetryd.auth import Authenticator, AuthFailure, Identity
from telemetryd.config import (
    AuthSettings,
    ConfigError,
    JupyterHubSettings,
    ServerSettings,
    parse_config,
)
from telemetryd.core.ingest import Ingestor
from telemetryd.core.reasons import DropReason
from telemetryd.core.record import Record
from telemetryd.core.schemas.registry import SchemaRegistry
from telemetryd.core.stats import ComponentStats
from telemetryd.delivery.bus import Bus
from telemetryd.delivery.intake import Intake
from telemetryd.delivery.sink_queue import SinkQueue
from telemetryd.integrations import hub_auth
from telemetryd.integrations.hub_auth import HubClient, holds_scope
from telemetryd.sources.http.app import HttpApi
from telemetryd.sources.http.server import HttpSource
from tests.support.http_client import jupyter_event
from tests.support.ports import free_port
from tests.support.socket_client import KERNELS
from tests.support.waiting import wait_for

ALICE = b"alice-hub-token"
BOB = b"bob-hub-token"


def user(name: str, groups: Sequence[str] = (), scopes: Sequence[str] = ()) -> dict[str, Any]:
    """The model JupyterHub's GET /hub/api/user answers for a user's token (the keys read)."""
    return {
        "kind": "user",
        "name": name,
        "admin": False,
        "groups": list(groups),
        "scopes": list(scopes),
        "token_id": "a1",
        "session_id": None,
    }


class StubHub:
    """GET /hub/api/user on loopback: each token's (status, body), 403 for the others; counts
    the calls, how many were in flight at once, and can answer late."""

    def __init__(self) -> None:
        self.answers: dict[bytes, tuple[int, bytes]] = {}
        self.calls: list[tuple[str, bytes]] = []  # (path, Authorization)
        self.delay_secs = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    def knows(self, token: bytes, model: dict[str, Any]) -> None:
        self.answers[token] = (200, json.dumps(model).encode())

    def answer(self, token: bytes, status: int, body: bytes = b"") -> None:
        self.answers[token] = (status, body)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        finally:
            self.handlers.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        path = request_line.split(" ")[1]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        authorization = headers.get("authorization", "").encode("latin-1")
        self.calls.append((path, authorization))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_secs)
        finally:
            self.in_flight -= 1
        token = authorization.removeprefix(b"token ")
        status, body = self.answers.get(token, (403, b'{"status": 403, "message": "Forbidden"}'))
        if path != "/hub/api/user":
            status, body = 404, b'{"status": 404}'
        writer.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, len(body), body)
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()


@asynccontextmanager
async def stub_hub() -> AsyncIterator[StubHub]:
    hub = StubHub()
    server = await asyncio.start_server(hub.handle, "127.0.0.1", 0)
    hub.port = server.sockets[0].getsockname()[1]
    try:
        yield hub
    finally:
        server.close()
        for task in list(hub.handlers):  # those still answering late
            task.cancel()
        await asyncio.gather(*hub.handlers, return_exceptions=True)
        await server.wait_closed()


@asynccontextmanager
async def authenticator(
    api_url: str, *, tokens: Sequence[dict[str, Any]] = (), **hub: Any
) -> AsyncIterator[Authenticator]:
    settings = AuthSettings.model_validate(
        {"tokens": list(tokens), "jupyterhub": {"api_url": api_url, **hub}}
    )
    client = HubClient()
    try:
        yield Authenticator(settings, client)
    finally:
        await client.aclose()


async def settle(verdict: object) -> Identity | AuthFailure | None:
    """authenticate()'s verdict, awaited when it is a call to the hub."""
    if isinstance(verdict, Awaitable):
        verdict = await verdict
    assert verdict is None or isinstance(verdict, Identity | AuthFailure), verdict
    return verdict


class Clock:
    """hub_auth's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(hub_auth, "now", fake)
    return fake


def header(token: bytes, scheme: bytes = b"token") -> bytes:
    return scheme + b" " + token


# --- the cache ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", [b"token", b"Bearer", b"bearer"])
async def test_a_token_is_asked_once_then_answered_without_await(scheme: bytes) -> None:
    async with stub_hub() as hub, authenticator(hub.api_url) as auth:
        hub.knows(ALICE, user("alice"))
        first = auth.authenticate(header(ALICE, scheme), required=True)
        assert isinstance(first, Awaitable)  # a miss: the hub is asked
        identity = await settle(first)
        assert isinstance(identity, Identity)
        assert (identity.user, identity.kind, identity.hub) == ("alice", "", True)
        # the hub is sent the user's token, as `token <t>` whatever scheme the client used
        assert hub.calls == [("/hub/api/user", b"token " + ALICE)]
        for _ in range(3):
            assert auth.authenticate(header(ALICE, scheme), required=True) is identity
        assert len(hub.calls) == 1


@pytest.mark.anyio
async def test_the_answer_expires_after_cache_secs(clock: Clock) -> None:
    async with stub_hub() as hub, authenticator(hub.api_url, cache_secs=60) as auth:
        hub.knows(ALICE, user("alice"))
        assert isinstance(await settle(auth.authenticate(header(ALICE), required=True)), Identity)
        clock.now += 59.9
        assert isinstance(auth.authenticate(header(ALICE), required=True), Identity)
        clock.now += 0.2
        hub.answer(ALICE, 403)  # revoked in the hub meanwhile
        again = auth.authenticate(header(ALICE), required=True)
        assert isinstance(again, Awaitable)
        verdict = await settle(again)
        assert isinstance(verdict, AuthFailure)
        assert (verdict.status, verdict.reason) == (403, "forbidden")
        assert len(hub.calls) == 2


@pytest.mark.anyio
async def test_cache_secs_0_asks_every_time() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url, cache_secs=0) as auth:
        hub.knows(ALICE, user("alice"))
        for _ in range(3):
            verdict = auth.authenticate(header(ALICE), required=True)
            assert isinstance(await settle(verdict), Identity)
        assert len(hub.calls) == 3


@pytest.mark.anyio
async def test_a_refused_token_is_cached_for_negative_cache_secs(clock: Clock) -> None:
    async with stub_hub() as hub, authenticator(hub.api_url, negative_cache_secs=5) as auth:
        refused = await settle(auth.authenticate(header(b"nope"), required=False))
        assert isinstance(refused, AuthFailure)
        assert (refused.status, refused.reason) == (403, "forbidden")
        assert "JupyterHub" in refused.message
        clock.now += 4.9
        assert auth.authenticate(header(b"nope"), required=False) is refused  # not asked
        assert len(hub.calls) == 1
        clock.now += 0.2
        hub.knows(b"nope", user("late"))  # the token was created in the hub meanwhile
        identity = await settle(auth.authenticate(header(b"nope"), required=False))
        assert isinstance(identity, Identity)
        assert identity.user == "late"
        assert len(hub.calls) == 2


@pytest.mark.anyio
async def test_a_401_from_the_hub_is_a_refusal_too() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url) as auth:
        hub.answer(ALICE, 401)
        verdict = await settle(auth.authenticate(header(ALICE), required=True))
        assert isinstance(verdict, AuthFailure)
        assert verdict.status == 403


# --- a hub that cannot be asked -------------------------------------------------------------

NOT_A_MODEL = [
    (502, b"bad gateway"),
    (500, b'{"status": 500}'),
    (404, b'{"status": 404}'),
    (302, b""),
    (200, b"<html>the proxy's login page</html>"),
    (200, b'{"kind": "user"}'),
    (200, b'{"kind": "user", "name": ""}'),
    (200, b'{"kind": "user", "name": "alice", "groups": "not-a-list"}'),
]


@pytest.mark.anyio
async def test_a_hub_that_gives_no_answer_is_503_and_never_cached() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url) as auth:
        for i, (status, body) in enumerate(NOT_A_MODEL, 1):
            hub.answer(ALICE, status, body)
            verdict = await settle(auth.authenticate(header(ALICE), required=True))
            assert isinstance(verdict, AuthFailure), (status, body)
            assert (verdict.status, verdict.reason) == (503, "hub_unavailable"), (status, body)
            assert "retry later" in verdict.message
            assert len(hub.calls) == i  # every request asked again
        hub.knows(ALICE, user("alice"))
        verdict = await settle(auth.authenticate(header(ALICE), required=True))
        assert isinstance(verdict, Identity)


@pytest.mark.anyio
async def test_an_unreachable_hub_is_503() -> None:
    url = f"http://127.0.0.1:{free_port()}/hub/api"  # nothing listens there
    async with authenticator(url) as auth:
        verdict = await settle(auth.authenticate(header(ALICE), required=True))
        assert isinstance(verdict, AuthFailure)
        assert (verdict.status, verdict.reason) == (503, "hub_unavailable")
        assert "unreachable" in verdict.message
        again = auth.authenticate(header(ALICE), required=True)  # not cached: asked again
        assert isinstance(again, Awaitable)
        assert isinstance(await settle(again), AuthFailure)


@pytest.mark.anyio
async def test_a_hub_slower_than_timeout_secs_is_503_in_time() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url, timeout_secs=0.3) as auth:
        hub.knows(ALICE, user("alice"))
        hub.delay_secs = 30  # far above the bound below, which a loaded machine may approach
        started = time.monotonic()
        verdict = await settle(auth.authenticate(header(ALICE), required=True))
        took = time.monotonic() - started
        assert isinstance(verdict, AuthFailure)
        assert (verdict.status, verdict.reason) == (503, "hub_unavailable")
        assert 0.25 < took < 10, took
        hub.delay_secs = 0
        assert isinstance(await settle(auth.authenticate(header(ALICE), required=True)), Identity)


# --- calls in flight ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_misses_for_one_token_share_one_call() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url) as auth:
        hub.knows(ALICE, user("alice"))
        hub.delay_secs = 0.2
        verdicts: list[Identity | AuthFailure | None] = []

        async def one() -> None:
            verdicts.append(await settle(auth.authenticate(header(ALICE), required=True)))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
        assert len(hub.calls) == 1
        assert len(verdicts) == 20
        assert all(isinstance(v, Identity) and v.user == "alice" for v in verdicts)


@pytest.mark.anyio
async def test_calls_in_flight_are_bounded_by_max_concurrent_requests() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url, max_concurrent_requests=2) as auth:
        tokens = [b"token-%d" % i for i in range(8)]
        for i, token in enumerate(tokens):
            hub.knows(token, user(f"user{i}"))
        hub.delay_secs = 0.05
        names: list[str] = []

        async def one(token: bytes) -> None:
            verdict = await settle(auth.authenticate(header(token), required=True))
            assert isinstance(verdict, Identity)
            names.append(verdict.user)

        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(one, token)
        assert sorted(names) == sorted(f"user{i}" for i in range(8))
        assert hub.most_in_flight == 2
        assert len(hub.calls) == 8


@pytest.mark.anyio
async def test_a_cancelled_request_does_not_strand_those_waiting_for_its_call() -> None:
    async with stub_hub() as hub, authenticator(hub.api_url) as auth:
        hub.knows(ALICE, user("alice"))
        hub.delay_secs = 0.3
        verdicts: list[Identity | AuthFailure | None] = []
        first_asking = anyio.CancelScope()

        async def first() -> None:
            with first_asking:
                await settle(auth.authenticate(header(ALICE), required=True))

        async def follower() -> None:
            verdicts.append(await settle(auth.authenticate(header(ALICE), required=True)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: hub.calls, 5, "a call"))
            tg.start_soon(follower)
            await anyio.wait_all_tasks_blocked()  # the follower waits for the first's call
            first_asking.cancel()  # the client that asked first goes away
        assert len(verdicts) == 1
        assert isinstance(verdicts[0], Identity)
        assert len(hub.calls) == 2  # the follower asked again for itself


# --- static tokens first; kinds, users, groups, scopes --------------------------------------


@pytest.mark.anyio
async def test_static_tokens_are_checked_before_the_hub() -> None:
    import hashlib

    static = {
        "identity": "hub-logger",
        "hash": "sha256:" + hashlib.sha256(b"static-one").hexdigest(),
    }
    async with stub_hub() as hub, authenticator(hub.api_url, tokens=[static]) as auth:
        hub.knows(ALICE, user("alice"))
        verdict = auth.authenticate(header(b"static-one"), required=True)
        assert isinstance(verdict, Identity)  # at once: no hub call
        assert (verdict.user, verdict.hub) == ("hub-logger", False)
        assert hub.calls == []
        verdict = await settle(auth.authenticate(header(ALICE), required=True))
        assert isinstance(verdict, Identity)
        assert verdict.user == "alice"
        # no usable credentials are never shown to the hub
        for value in (b"token", b"Basic YWxpY2U6cHc=", b"token a b"):
            assert auth.authenticate(value, required=False) is None
            failure = auth.authenticate(value, required=True)
            assert isinstance(failure, AuthFailure)
            assert failure.status == 401
        assert len(hub.calls) == 1


SERVICE = {"kind": "service", "name": "announcer", "roles": [], "scopes": []}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "model", "expected"),
    [
        ({}, user("alice"), ("alice", "")),
        ({}, SERVICE, "JupyterHub service 'announcer'"),
        ({"kinds": ["user", "service"]}, SERVICE, ("announcer", "service")),
        ({"kinds": ["service"]}, user("alice"), "accepts services' tokens only"),
        ({"kinds": ["user", "service"]}, {"kind": "gremlin", "name": "x"}, "kinds accepts"),
        ({"allowed_users": ["alice"]}, user("alice"), ("alice", "")),
        ({"allowed_users": ["bob"]}, user("alice"), "neither allowed_users nor allowed_groups"),
        ({"allowed_groups": ["students"]}, user("alice", ["staff", "students"]), ("alice", "")),
        ({"allowed_groups": ["students"]}, user("alice", ["staff"]), "allowed_groups"),
        ({"allowed_users": ["alice"], "allowed_groups": ["x"]}, user("alice"), ("alice", "")),
        (
            {"allowed_groups": ["students"], "kinds": ["user", "service"]},
            SERVICE,  # groups restrict users
            ("announcer", "service"),
        ),
        (
            {"access_scopes": ["access:services!service=telemetryd"]},
            user("alice", scopes=["access:services!service=telemetryd", "read:users:name!user"]),
            ("alice", ""),
        ),
        (
            {"access_scopes": ["access:services!service=telemetryd"]},
            user("alice", scopes=["access:services"]),
            ("alice", ""),
        ),
        (
            {"access_scopes": ["access:services!service=telemetryd"]},
            user("alice", scopes=["access:services!service=other", "users:activity!user"]),
            "holds none of the access_scopes",
        ),
    ],
)
async def test_who_the_hub_vouches_for_is_accepted_per_settings(
    settings: dict[str, Any], model: dict[str, Any], expected: tuple[str, str] | str
) -> None:
    async with stub_hub() as hub, authenticator(hub.api_url, **settings) as auth:
        hub.knows(ALICE, model)
        verdict = await settle(auth.authenticate(header(ALICE), required=True))
        if isinstance(expected, tuple):
            assert isinstance(verdict, Identity), verdict
            assert (verdict.user, verdict.kind) == expected
        else:
            assert isinstance(verdict, AuthFailure)
            assert (verdict.status, verdict.reason) == (403, "forbidden")
            assert expected in verdict.message, verdict.message
        # either way a valid token's answer is cached for cache_secs
        assert auth.authenticate(header(ALICE), required=True) is verdict


def test_holds_scope_resolves_filters_as_jupyterhub() -> None:
    wanted = ["access:services!service=telemetryd"]
    assert holds_scope(["access:services!service=telemetryd"], wanted)
    assert holds_scope(["access:services"], wanted)
    assert not holds_scope(["access:services!service=other"], wanted)
    assert not holds_scope([], wanted)
    # an unfiltered requirement is not met by a filtered scope
    assert not holds_scope(["access:services!service=telemetryd"], ["access:services"])
    assert holds_scope(["read:users"], ["self", "read:users"])  # any one of them


# --- through the HTTP API -------------------------------------------------------------------


class CapturingBus(Bus):
    def __init__(self) -> None:
        super().__init__([])
        self.records: list[Record] = []

    async def publish(
        self, records: Sequence[Record], *, lost_reason: str = DropReason.SHUTDOWN_TIMEOUT
    ) -> None:
        self.records.extend(records)


@asynccontextmanager
async def http_api(auth: AuthSettings) -> AsyncIterator[tuple[HttpSource[HttpApi], CapturingBus]]:
    bus = CapturingBus()
    dead_letter = SinkQueue(100, 1 << 20, "drop_newest", ComponentStats("sink", "rejected"))
    source = HttpSource(
        HttpApi(
            ServerSettings(unix_socket=None, http="127.0.0.1:0"),
            Intake(
                Ingestor(SchemaRegistry.load()), bus, dead_letter, ComponentStats("source", "http")
            ),
            workers=[],
            auth=auth,
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(source.serve)
        try:
            yield source, bus
        finally:
            source.stop()


def origins(bus: CapturingBus) -> list[dict[str, Any]]:
    return [json.loads(record.payload)["__origin__"] for record in bus.records]


@pytest.mark.anyio
async def test_the_http_api_answers_with_the_hubs_identity_403_and_503() -> None:
    async with stub_hub() as hub:
        settings = AuthSettings.model_validate(
            {
                "required": True,
                "jupyterhub": {
                    "api_url": hub.api_url,
                    "kinds": ["user", "service"],
                    "allowed_schemas": [KERNELS],
                },
            }
        )
        hub.knows(ALICE, user("alice"))
        hub.knows(BOB, SERVICE)
        hub.answer(b"broken", 502, b"bad gateway")
        async with (
            http_api(settings) as (source, bus),
            httpx.AsyncClient(base_url=f"http://{source.address}") as client,
        ):
            kernel = {"schema_id": KERNELS, "version": "1", "data": {"action": "start", "msg": "m"}}

            async def post(token: bytes | None, body: Any = kernel) -> httpx.Response:
                headers = {} if token is None else {"authorization": "Bearer " + token.decode()}
                return await client.post("/api/events", json=body, headers=headers)

            assert (await post(ALICE)).status_code == 204
            assert (await post(ALICE)).status_code == 204  # from the cache
            assert (await post(BOB)).status_code == 204
            alice = {"transport": "http", "user": "alice", "remote": "127.0.0.1"}
            service = {"transport": "http", "user": "announcer", "kind": "service"}
            assert origins(bus) == [alice, alice, service | {"remote": "127.0.0.1"}]
            assert len(hub.calls) == 2

            refused = await post(b"nope")
            assert refused.status_code == 403
            assert refused.json()["reason"] == "forbidden"
            assert "retry-after" not in refused.headers

            down = await post(b"broken")
            assert down.status_code == 503
            assert down.headers["retry-after"] == "5"
            assert down.json() == {
                "message": "the token cannot be checked: JupyterHub answered 502; retry later",
                "reason": "hub_unavailable",
            }

            anonymous = await post(None)
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == 'Bearer realm="telemetryd"'

            # hub-verified tokens get [auth.jupyterhub] allowed_schemas
            other = await post(ALICE, jupyter_event("not/kernels"))
            assert other.status_code == 403
            assert other.json()["reason"] == "schema_not_allowed"
            assert "[auth.jupyterhub] allowed_schemas" in other.json()["message"]
            assert len(bus.records) == 3

            errors = source.stats.errors
            assert (errors["forbidden"], errors["hub_unavailable"]) == (1, 1)
            assert errors["unauthenticated"] == 1


@pytest.mark.anyio
async def test_a_reload_empties_the_cache_and_keeps_the_connections() -> None:
    async with stub_hub() as hub:
        settings = AuthSettings.model_validate({"jupyterhub": {"api_url": hub.api_url}})
        hub.knows(ALICE, user("alice"))
        async with (
            http_api(settings) as (source, _),
            httpx.AsyncClient(base_url=f"http://{source.address}") as client,
        ):
            headers = {"authorization": "token " + ALICE.decode()}
            body = jupyter_event("reload/1")
            assert (await client.post("/api/events", json=body, headers=headers)).is_success
            assert (await client.post("/api/events", json=body, headers=headers)).is_success
            assert len(hub.calls) == 1
            api = source.api
            before = api.auth
            api.reload_auth(settings)
            assert api.auth is not before
            assert api.auth.hub is not None
            assert api.auth.hub.client is api.hub_client
            hub.answer(ALICE, 403)  # revoked: the reload makes it count at once
            refused = await client.post("/api/events", json=body, headers=headers)
            assert refused.status_code == 403
            assert len(hub.calls) == 2


# --- configuration --------------------------------------------------------------------------


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    return info.value.problems


def test_api_url_defaults_to_jupyterhub_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api/")
    config = parse_config("[auth.jupyterhub]\n")
    assert config.auth.jupyterhub is not None
    assert config.auth.jupyterhub.api_url == "http://hub:8081/hub/api"
    given = parse_config('[auth.jupyterhub]\napi_url = "https://hub.example.org/hub/api"\n')
    assert given.auth.jupyterhub is not None
    assert given.auth.jupyterhub.api_url == "https://hub.example.org/hub/api"
    assert parse_config("").auth.jupyterhub is None


def test_defaults() -> None:
    hub = JupyterHubSettings(api_url="http://127.0.0.1:8081/hub/api")
    assert (hub.cache_secs, hub.negative_cache_secs, hub.timeout_secs) == (60, 5, 5)
    assert (hub.max_concurrent_requests, hub.kinds) == (8, ["user"])
    assert hub.allowed_users == hub.allowed_groups == hub.access_scopes == []


def test_no_api_url_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    ((key, problem),) = problems("[auth.jupyterhub]\ncache_secs = 30\n")
    assert key == "auth.jupyterhub.api_url"
    assert "$JUPYTERHUB_API_URL" in problem


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('api_url = "hub:8081/hub/api"', "auth.jupyterhub.api_url", "http:// or https://"),
        ('api_url = "ftp://hub/hub/api"', "auth.jupyterhub.api_url", "http:// or https://"),
        ('api_url = "http:///hub/api"', "auth.jupyterhub.api_url", "http:// or https://"),
        ('api_url = "http://hub/hub/api?x=1"', "auth.jupyterhub.api_url", "query"),
        ("cache_secs = -1", "auth.jupyterhub.cache_secs", "greater than or equal to 0"),
        ("negative_cache_secs = -1", "auth.jupyterhub.negative_cache_secs", "greater than"),
        ("timeout_secs = 0", "auth.jupyterhub.timeout_secs", "greater than 0"),
        ("max_concurrent_requests = 0", "auth.jupyterhub.max_concurrent_requests", "greater"),
        ('kinds = ["admin"]', "auth.jupyterhub.kinds[0]", "'user' or 'service'"),
        ("kinds = []", "auth.jupyterhub.kinds", "at least 1"),
        ('api_token = "x"', "auth.jupyterhub.api_token", "unknown key"),
        ('allowed_groups = "students"', "auth.jupyterhub.allowed_groups", "list"),
    ],
)
def test_bad_settings_name_their_key(
    monkeypatch: pytest.MonkeyPatch, line: str, key: str, words: str
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
    found = problems(f"[auth.jupyterhub]\n{line}\n")
    assert [k for k, _ in found] == [key], found
    assert words in found[0][1], found


def test_required_needs_tokens_or_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
    config = parse_config(
        "[auth]\nrequired = true\nprotect_health = true\nprotect_metrics = true\n"
        "[auth.jupyterhub]\n"
    )
    assert config.auth.required
    ((key, problem),) = problems("[auth]\nrequired = true\n")
    assert key == "auth"
    assert "neither [[auth.tokens]] nor [auth.jupyterhub]" in problem
