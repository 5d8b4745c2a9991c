"""The http sink through real daemons: an agent telemetryd forwarding to an aggregator
telemetryd's POST /api/events/batch, and to a webhook receiver that pushes back with
Retry-After; every accepted event counted at the destination, an outage of the aggregator
included."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from telemetryd.auth import hash_token
from tests.support.config_text import daemon_config, file_sink
from tests.support.daemon_process import DaemonProcess
from tests.support.ports import free_port
from tests.support.records import read_records, records_so_far
from tests.support.sink_health import final_sink, sink_health
from tests.support.socket_client import CONTENTS, KERNELS, event_line, send_acked
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.integration

REJECTED = "https://events.telemetryd.org/telemetryd/rejected_event/v1"
AGENT_TOKEN = "agent-1-token-0123456789abcdefghijklmnopqrstuvwxyz"
OTHER_TOKEN = "other-token-0123456789abcdefghijklmnopqrstuvwxyz01"
BATCH_MAX_EVENTS = 200


def aggregator_config(workdir: Path, port: int, *, agent_token: bool = True) -> str:
    """[auth] required; the agent's token may send contents_service events only."""
    tokens = f"""
[auth]
required = true

[[auth.tokens]]
identity = "other"
hash = "{hash_token(OTHER_TOKEN)}"
"""
    if agent_token:
        tokens += f"""
[[auth.tokens]]
identity = "agent-1"
hash = "{hash_token(AGENT_TOKEN)}"
allowed_schemas = ["{CONTENTS}"]
"""
    sinks = file_sink("archive", workdir / "out" / "events.jsonl") + tokens
    return daemon_config(workdir, server=f'http = "127.0.0.1:{port}"', sinks=sinks)


def http_sink(url: str, extra: str = "", retry_max_secs: float = 1) -> str:
    return f"""
[[sinks]]
name = "forward"
type = "http"
url = "{url}"
batch_max_events = {BATCH_MAX_EVENTS}
retry_initial_secs = 0.05
retry_max_secs = {retry_max_secs}
{extra}
"""


def agent_config(workdir: Path, sink: str) -> str:
    """The HTTP API on a free port for /readyz; a local file sink beside the forwarding one."""
    sinks = file_sink("local", workdir / "out" / "events.jsonl") + sink
    return daemon_config(workdir, server='http = "127.0.0.1:0"', sinks=sinks)


def forwarding(port: int, *, gzip: bool = False, in_flight: int = 1) -> str:
    return http_sink(
        f"http://127.0.0.1:{port}/api/events/batch",
        f'format = "events"\nauth_token = "{AGENT_TOKEN}"\ngzip = {str(gzip).lower()}\n'
        f"batches_in_flight = {in_flight}",
    )


def kernel_line(i: int) -> bytes:
    return json.dumps(
        {"schema_id": KERNELS, "version": "1", "data": {"action": "start", "msg": f"k-{i}"}}
    ).encode()


def paths(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["path"] for r in records if "path" in r)


def wait_for_paths(path: Path, expected: set[str], timeout: float) -> Counter[str]:
    def arrived() -> Counter[str] | None:
        found = paths(records_so_far(path))
        return found if set(found) >= expected else None

    return wait_for(arrived, timeout, f"{len(expected)} records in {path}")


# --- agent -> aggregator ----------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [1, 3])
def test_agent_forwards_every_event_and_counts_what_the_aggregator_rejects(
    tmp_path: Path, in_flight: int
) -> None:
    port = free_port()
    (tmp_path / "aggregator").mkdir()
    (tmp_path / "agent").mkdir()
    events = [event_line(f"a/{i}.ipynb") for i in range(3_000)]
    kernels = [kernel_line(i) for i in range(40)]  # the agent's token may not send these
    with (
        DaemonProcess(
            tmp_path / "aggregator", aggregator_config(tmp_path / "aggregator", port)
        ) as aggregator,
        DaemonProcess(
            tmp_path / "agent",
            agent_config(tmp_path / "agent", forwarding(port, gzip=True, in_flight=in_flight)),
        ) as agent,
    ):
        assert send_acked(agent, events[:1500] + kernels + events[1500:]) == []
        expected = {f"a/{i}.ipynb" for i in range(3_000)}
        archive = tmp_path / "aggregator" / "out" / "events.jsonl"
        dead = tmp_path / "aggregator" / "out" / "rejected.jsonl"
        wait_for_paths(archive, expected, timeout=30)
        wait_for(lambda: len(records_so_far(dead)) == 40, 10, "40 rejections at the aggregator")
        assert sink_health(agent, "forward")["healthy"]
        assert "40 events rejected by the destination" in sink_health(agent, "forward")["detail"]
        assert agent.stop() == 0
        assert aggregator.stop() == 0

    forwarded = read_records(archive)
    assert paths(forwarded) == Counter(expected)
    local = {
        r["path"]: r
        for r in read_records(tmp_path / "agent" / "out" / "events.jsonl")
        if "path" in r
    }
    for record in forwarded:
        # the agent's time and data; the aggregator's origin: the agent's token identity
        assert record["__timestamp__"] == local[record["path"]]["__timestamp__"]
        assert record["__schema__"] == CONTENTS
        assert record["__origin__"]["transport"] == "http"
        assert record["__origin__"]["user"] == "agent-1"
        assert {k: v for k, v in record.items() if not k.startswith("__")} == {
            "action": "save",
            "path": record["path"],
        }
    rejected = read_records(dead)
    assert Counter(r["__schema__"] for r in rejected) == {REJECTED: 40}
    assert Counter(r["reason"] for r in rejected) == {"schema_not_allowed": 40}

    forward = final_sink(agent, "forward")
    assert forward["sent"] == 3_040  # delivered: the aggregator has taken every one
    assert forward["errors"] == {}
    warnings = [line for line in agent.log_lines() if line.get("reason") == "schema_not_allowed"]
    assert len(warnings) == 1, warnings  # counted, logged once


def test_a_wrong_token_keeps_the_events_until_the_aggregator_knows_it(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "aggregator").mkdir()
    (tmp_path / "agent").mkdir()
    aggregator_dir = tmp_path / "aggregator"
    with (
        DaemonProcess(
            aggregator_dir, aggregator_config(aggregator_dir, port, agent_token=False)
        ) as aggregator,
        DaemonProcess(
            tmp_path / "agent", agent_config(tmp_path / "agent", forwarding(port))
        ) as agent,
    ):
        assert send_acked(agent, [event_line(f"t/{i}") for i in range(100)]) == []
        health = wait_for(
            lambda: (h := sink_health(agent, "forward"))["detail"] and h, 10, "an unhealthy sink"
        )
        assert not health["healthy"]
        assert "403 Forbidden" in health["detail"]
        assert "check url and auth_token" in health["detail"]

        aggregator.config_path.write_text(aggregator_config(aggregator_dir, port))
        aggregator.signal(signal.SIGHUP)
        wait_for_paths(aggregator_dir / "out" / "events.jsonl", {f"t/{i}" for i in range(100)}, 15)
        wait_for(lambda: sink_health(agent, "forward")["healthy"], 10, "a healthy sink")
        assert agent.stop() == 0
        assert aggregator.stop() == 0
    assert read_records(aggregator_dir / "out" / "rejected.jsonl") == []


# --- a webhook ----------------------------------------------------------------------------------


def webhook_agent(tmp_path: Path, url: str, extra: str = "") -> DaemonProcess:
    # The worker waits min(Retry-After, retry_max_secs): a cap above the tests' Retry-After.
    return DaemonProcess(tmp_path, agent_config(tmp_path, http_sink(url, extra, 10)))


def test_the_sink_waits_out_retry_after_then_delivers(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    hook.script(Answer(503, {"Retry-After": "2"}))
    with webhook_agent(tmp_path, hook.url) as agent:
        assert send_acked(agent, [event_line(f"w/{i}") for i in range(50)]) == []
        wait_for(lambda: len(hook.records()) == 50, 15, "the first 50 records")
        hook.script(Answer(429, {"Retry-After": "1"}), Answer(429, {"Retry-After": "1"}))
        assert send_acked(agent, [event_line(f"w/{i}") for i in range(50, 100)]) == []
        wait_for(lambda: len(hook.records()) == 100, 15, "100 records")
        assert agent.stop() == 0

    statuses = [r.status for r in hook.requests]
    assert statuses[:2] == [503, 200], statuses
    refused_503, retried = hook.requests[0], hook.requests[1]
    assert retried.at - refused_503.at >= 2.0
    assert retried.body == refused_503.body  # the same batch again
    i = statuses.index(429)
    assert statuses[i : i + 3] == [429, 429, 200]
    assert hook.requests[i + 1].at - hook.requests[i].at >= 1.0
    assert hook.requests[i + 2].at - hook.requests[i + 1].at >= 1.0
    assert paths(hook.records()) == Counter(f"w/{i}" for i in range(100))
    assert final_sink(agent, "forward")["errors"] == {"RetryLater": 3}


def test_gzip_bodies_through_the_daemon(tmp_path: Path, hook: WebhookReceiver) -> None:
    with webhook_agent(tmp_path, hook.url, 'gzip = true\nheaders = { "X-Source" = "lab" }') as a:
        assert send_acked(a, [event_line(f"g/{i}") for i in range(2_000)]) == []
        wait_for(lambda: len(hook.records()) == 2_000, 15, "2,000 records")
        assert a.stop() == 0

    assert all(r.headers["content-encoding"] == "gzip" for r in hook.requests)
    assert all(r.headers["x-source"] == "lab" for r in hook.requests)
    assert sum(len(r.raw) for r in hook.requests) * 4 < sum(len(r.body) for r in hook.requests)
    assert paths(hook.records()) == Counter(f"g/{i}" for i in range(2_000))
    local = read_records(tmp_path / "out" / "events.jsonl")
    assert hook.records() == local  # records format: the records as stored, byte for byte
