"""[auth.jupyterhub] against a live JupyterHub (tests/support/jupyterhub_process.py): the real
daemon asks the real hub's GET /hub/api/user about the tokens its clients send.

A user's token is stored with the hub's user name as `__origin__.user`; a token the hub does not
know is 403 and nothing is stored; a service's token is refused unless `kinds` has "service";
access_scopes and allowed_groups read the scopes and groups the hub reports; and once the hub is
stopped, a cached token still works while an uncached one is 503 with Retry-After, until a
SIGHUP empties the cache.

The hub's own events: with `c.EventLogger.handlers = [TelemetrydHandler(socket)]` in
jupyterhub_config.py, the `server-action` events of a single-user server's start and stop
(SimpleLocalProcessSpawner, so it runs here and in CI, as root) are stored with the hub's peer
credentials as `__origin__`.

CI installs jupyterhub (the test extra) and configurable-http-proxy (npm, in .ci/run), so these
run there; elsewhere they are skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.config_text import daemon_config, file_sink, http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import jupyter_event
from tests.support.jupyterhub_process import (
    TELEMETRYD_SCOPE,
    JupyterHubProcess,
    missing,
    spawner_config,
)
from tests.support.records import (
    assert_record_shape,
    parse_record_time,
    read_records,
    records_so_far,
    wait_for_records,
)
from tests.support.waiting import wait_for

MISSING = missing()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        MISSING is not None and not os.environ.get("CI"), reason=f"no live JupyterHub: {MISSING}"
    ),
]

HTTP = {"transport": "http", "remote": "127.0.0.1"}


SERVER_ACTION = "https://schema.jupyter.org/jupyterhub/events/server-action"


def start_hub(workdir: Path, extra_config: str = "") -> JupyterHubProcess:
    if MISSING is not None:  # only under CI, which must run these
        pytest.fail(f"CI runs the live JupyterHub tests, but {MISSING}")
    return JupyterHubProcess(workdir, extra_config=extra_config)


@dataclass
class Tokens:
    alice: str  # scoped to telemetryd alone; alice is in group students
    alice_full: str  # with all of alice's scopes
    bob: str  # scoped to telemetryd; bob is in no group
    carol: str  # users:activity only, as a single-user server's token; carol is a student
    service: str  # the test-admin service's own token


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterHubProcess, Tokens]]:
    with start_hub(tmp_path_factory.mktemp("jupyterhub")) as running:
        for name in ("alice", "bob", "carol"):
            running.create_user(name)
        running.create_group("students", ["alice", "carol"])
        tokens = Tokens(
            alice=running.new_token("alice", [TELEMETRYD_SCOPE]),
            alice_full=running.new_token("alice"),
            bob=running.new_token("bob", [TELEMETRYD_SCOPE]),
            carol=running.new_token("carol", ["users:activity!user"]),
            service=running.admin_token,
        )
        yield running, tokens


class Daemon:
    def __init__(self, daemon: DaemonProcess, workdir: Path) -> None:
        self.daemon = daemon
        self.events = workdir / "out" / "events.jsonl"
        self.rejected = workdir / "out" / "rejected.jsonl"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{http_port(daemon)}", timeout=30)

    def post(self, path: str, token: str | None, scheme: str = "token") -> httpx.Response:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"{scheme} {token}"
        body = json.dumps(jupyter_event(path)).encode()
        return self.client.post("/api/events", content=body, headers=headers)

    def origin_of(self, path: str) -> dict[str, Any]:
        (record,) = wait_for_records(self.events, lambda r: r.get("path") == path)
        origin: dict[str, Any] = record["__origin__"]
        return origin

    def stored(self, path: str) -> bool:
        return any(
            r.get("path") == path or path in str(r.get("raw", ""))
            for file in (self.events, self.rejected)
            for r in records_so_far(file)
        )

    def hub_errors(self) -> float:
        families = text_string_to_metric_families(self.client.get("/metrics").text)
        return sum(
            sample.value
            for family in families
            if family.name == "telemetryd_source_errors"
            for sample in family.samples
            if sample.labels.get("kind") == "hub_unavailable"
        )


@contextmanager
def run_daemon(workdir: Path, api_url: str, hub_settings: str = "") -> Iterator[Daemon]:
    auth = f"""
[auth]
required = true

[auth.jupyterhub]
api_url = "{api_url}"
{hub_settings}
"""
    sinks = file_sink("archive", workdir / "out" / "events.jsonl") + auth
    workdir.mkdir(exist_ok=True)
    with DaemonProcess(workdir, http_config(workdir, sinks=sinks)) as daemon:
        running = Daemon(daemon, workdir)
        with running.client:
            yield running
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def daemon(
    hub: tuple[JupyterHubProcess, Tokens], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """[auth.jupyterhub] with its defaults: any token of a hub user."""
    with run_daemon(tmp_path_factory.mktemp("hub_daemon"), hub[0].api_url) as running:
        yield running


@pytest.fixture(scope="module")
def strict(
    hub: tuple[JupyterHubProcess, Tokens], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """Tokens scoped to telemetryd, of students or of services."""
    settings = f"""
kinds = ["user", "service"]
allowed_groups = ["students"]
access_scopes = ["{TELEMETRYD_SCOPE}"]
"""
    with run_daemon(tmp_path_factory.mktemp("hub_strict"), hub[0].api_url, settings) as running:
        yield running


def test_a_hub_users_token_is_stored_with_the_hubs_user_name(
    hub: tuple[JupyterHubProcess, Tokens], daemon: Daemon
) -> None:
    tokens = hub[1]
    response = daemon.post("hub/alice", tokens.alice)
    assert response.status_code == 204, response.text
    assert daemon.origin_of("hub/alice") == {"transport": "http", "user": "alice", **HTTP}
    response = daemon.post("hub/alice-bearer", tokens.alice_full, "Bearer")
    assert response.status_code == 204, response.text
    assert daemon.origin_of("hub/alice-bearer")["user"] == "alice"
    # a server-like token with no scope telemetryd asks for is its user's all the same
    assert daemon.post("hub/carol", tokens.carol).status_code == 204
    assert daemon.origin_of("hub/carol")["user"] == "carol"


def test_a_token_the_hub_does_not_know_is_403_and_nothing_is_stored(
    hub: tuple[JupyterHubProcess, Tokens], daemon: Daemon
) -> None:
    for attempt in range(2):  # the second from the negative cache
        response = daemon.post(f"hub/bad-{attempt}", "not-a-hub-token")
        assert response.status_code == 403
        assert response.json() == {
            "message": "JupyterHub does not accept the token",
            "reason": "forbidden",
        }
    assert daemon.post("hub/anonymous", None).status_code == 401
    # a request after them is stored, so these would have been by now
    assert daemon.post("hub/after-bad", hub[1].alice).status_code == 204
    daemon.origin_of("hub/after-bad")
    assert not any(daemon.stored(f"hub/{p}") for p in ("bad-0", "bad-1", "anonymous"))


def test_a_services_token_needs_kinds_service(
    hub: tuple[JupyterHubProcess, Tokens], daemon: Daemon, strict: Daemon
) -> None:
    response = daemon.post("hub/service-refused", hub[1].service)
    assert response.status_code == 403
    assert "JupyterHub service 'test-admin'" in response.json()["message"]
    response = strict.post("hub/service", hub[1].service)
    assert response.status_code == 204, response.text
    assert strict.origin_of("hub/service") == {
        "transport": "http",
        "user": "test-admin",
        "kind": "service",
        **HTTP,
    }
    assert not daemon.stored("hub/service-refused")


def test_access_scopes_and_allowed_groups_read_what_the_hub_reports(
    hub: tuple[JupyterHubProcess, Tokens], strict: Daemon
) -> None:
    tokens = hub[1]
    assert strict.post("hub/strict-alice", tokens.alice).status_code == 204
    assert strict.origin_of("hub/strict-alice")["user"] == "alice"
    bob = strict.post("hub/strict-bob", tokens.bob)  # scoped, but not a student
    assert bob.status_code == 403
    assert "allowed_groups" in bob.json()["message"]
    carol = strict.post("hub/strict-carol", tokens.carol)  # a student, but not scoped
    assert carol.status_code == 403
    assert TELEMETRYD_SCOPE in carol.json()["message"]
    assert not strict.stored("hub/strict-bob")
    assert not strict.stored("hub/strict-carol")


def reloads(daemon: Daemon) -> int:
    return sum(1 for line in daemon.daemon.log_lines() if line.get("msg") == "tokens reloaded")


def test_a_stopped_hub_makes_uncached_tokens_503_with_retry_after(tmp_path: Path) -> None:
    with (
        start_hub(tmp_path / "hub") as hub,
        run_daemon(tmp_path / "daemon", hub.api_url, "timeout_secs = 2") as daemon,
    ):
        hub.create_user("alice")
        cached, uncached = hub.new_token("alice"), hub.new_token("alice")
        assert daemon.post("down/before", cached).status_code == 204
        hub.stop()

        # the answer cached before the hub stopped still counts
        assert daemon.post("down/cached", cached).status_code == 204
        assert daemon.origin_of("down/cached")["user"] == "alice"
        # a token the daemon has not asked about cannot be checked: never let through
        for attempt in range(2):  # never cached: asked (and failing) every time
            response = daemon.post(f"down/uncached-{attempt}", uncached)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            answer = response.json()
            assert answer["reason"] == "hub_unavailable"
            assert answer["message"] == (
                "the token cannot be checked: JupyterHub unreachable; retry later"
            )
        assert daemon.hub_errors() == 2
        logged = [line for line in daemon.daemon.log_lines() if "JupyterHub" in line["msg"]]
        assert [line["msg"] for line in logged] == [
            "JupyterHub cannot be asked: tokens not cached are answered 503"
        ]
        assert logged[0]["url"] == f"{hub.api_url}/user"

        # SIGHUP empties the cache: the cached token is asked about again, and cannot be
        before = reloads(daemon)
        daemon.daemon.signal(signal.SIGHUP)
        wait_for(lambda: reloads(daemon) > before, what="tokens reloaded")
        assert daemon.post("down/after-reload", cached).status_code == 503
        assert not any(
            daemon.stored(path)
            for path in ("down/uncached-0", "down/uncached-1", "down/after-reload")
        )


def test_the_hubs_server_action_events_reach_telemetryd_through_the_handler(
    tmp_path: Path,
) -> None:
    events = tmp_path / "daemon" / "out" / "events.jsonl"
    rejected = tmp_path / "daemon" / "out" / "rejected.jsonl"
    (tmp_path / "daemon").mkdir()
    with DaemonProcess(tmp_path / "daemon", daemon_config(tmp_path / "daemon")) as daemon:
        handler = f"""
from telemetryd.client import TelemetrydHandler
c.EventLogger.handlers = [TelemetrydHandler({str(daemon.socket_path)!r})]
"""
        workdir = tmp_path / "hub"
        with start_hub(workdir, spawner_config(workdir) + handler) as hub:
            hub.create_user("alice")
            started = datetime.now(UTC)
            try:
                hub.start_server("alice")
            finally:  # a server that started, even if never ready, is stopped
                hub.stop_server("alice")
            actions = wait_for_records(
                events, lambda r: r["__schema__"] == SERVER_ACTION, count=2, timeout=10
            )
            finished = datetime.now(UTC)
            hub_pid = hub.pid
        assert daemon.stop() == 0

    assert Counter(r["action"] for r in actions) == {"start": 1, "stop": 1}
    assert [r["action"] for r in actions] == ["start", "stop"]
    for record in actions:
        data = assert_record_shape(record, SERVER_ACTION, hub_pid, version="1")
        assert data == {"action": record["action"], "username": "alice", "servername": ""}
        assert started <= parse_record_time(record["__timestamp__"]) <= finished
    # nothing else was stored (after the daemon stopped, every record is in the file), and
    # nothing was refused
    assert read_records(events) == actions
    assert not rejected.exists() or read_records(rejected) == []
