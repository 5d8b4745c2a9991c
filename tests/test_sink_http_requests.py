"""The http sink in-process against a real HTTP server on loopback: what it sends, and what it
does with each kind of answer (the daemon-level tests are in test_sink_http.py)."""

from __future__ import annotations

import gzip
import json
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from telemetryd.core.record import RECORD_START, Record, record_head
from telemetryd.plugins import load_sink_class
from telemetryd.sink import RetryLater
from telemetryd_sinks.http.events import EventEncoder, as_event
from telemetryd_sinks.http.sink import (
    HttpSettings,
    HttpSink,
    HttpSinkError,
    Refused,
    retry_after_secs,
)
from tests.support.webhook_receiver import Answer, WebhookReceiver

TOKEN = "agent-token-0123456789abcdefghijklmnopqrstuvwxyz"


def record(i: int, padding: int = 0) -> Record:
    payload = (
        b'{"__timestamp__":"2026-11-22T01:30:21.%06dZ","__schema__":"urn:test",'
        b'"__schema_version__":"1","__metadata_version__":1,'
        b'"__origin__":{"transport":"unix","user":"alice","uid":1000},'
        b'"i":%d,"p":"%s"}' % (i, i, b"x" * padding)
    )
    return Record(schema_id="urn:test", version="1", payload=payload, received=0.0)


def records(start: int, count: int, padding: int = 0) -> list[Record]:
    return [record(i, padding) for i in range(start, start + count)]


def settings(url: str, **overrides: Any) -> HttpSettings:
    return HttpSettings.model_validate({"name": "forward", "type": "http", "url": url, **overrides})


async def started(url: str, **overrides: Any) -> HttpSink:
    sink = HttpSink(settings(url, **overrides))
    await sink.start()
    return sink


def numbers(hook: WebhookReceiver) -> list[int]:
    return [r["i"] for r in hook.records()]


@pytest.mark.anyio
async def test_posts_every_record_as_one_ndjson_line_with_the_headers(
    hook: WebhookReceiver,
) -> None:
    sink = await started(hook.url, auth_token=TOKEN, headers={"X-Tenant": "lab"})
    await sink.write_batch(records(0, 10))
    await sink.write_batch(records(10, 5))
    await sink.close()

    first, second = hook.requests
    assert first.lines() == [r.payload for r in records(0, 10)]
    assert second.lines() == [r.payload for r in records(10, 5)]
    assert first.path == "/hook"
    assert first.headers["content-type"] == "application/x-ndjson"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["x-tenant"] == "lab"
    assert "content-encoding" not in first.headers
    assert sink.stats.delivered == 15
    assert sink.health().healthy


@pytest.mark.anyio
@pytest.mark.parametrize("padding", [0, 200])  # small bodies on the loop, large in a thread
async def test_gzip_bodies_decode_to_the_records(
    hook: WebhookReceiver, tmp_path: Path, padding: int
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    sink = await started(hook.url, gzip=True, auth_token_file=str(token_file))
    batch = records(0, 500, padding)
    await sink.write_batch(batch)
    await sink.close()

    (request,) = hook.requests
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert gzip.decompress(request.raw) == request.body
    assert len(request.raw) < len(request.body) / 3
    assert request.lines() == [r.payload for r in batch]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_seconds_is_raised_as_retry_later(
    hook: WebhookReceiver, status: int
) -> None:
    hook.script(Answer(status, {"Retry-After": "7"}, b"busy"))
    sink = await started(hook.url)
    with pytest.raises(RetryLater, match=f"{status}") as raised:
        await sink.write_batch(records(0, 3))
    assert raised.value.retry_after_secs == 7
    assert not sink.health().healthy
    assert "busy" in sink.health().detail
    await sink.write_batch(records(0, 3))  # the worker's retry
    assert sink.health().healthy
    await sink.close()
    assert numbers(hook) == [0, 1, 2]


@pytest.mark.anyio
async def test_retry_after_as_an_http_date(hook: WebhookReceiver) -> None:
    when = datetime.now(UTC) + timedelta(seconds=20)
    hook.script(Answer(503, {"Retry-After": format_datetime(when, usegmt=True)}))
    sink = await started(hook.url)
    with pytest.raises(RetryLater) as raised:
        await sink.write_batch(records(0, 1))
    assert 17 <= raised.value.retry_after_secs <= 20
    await sink.close()


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 22, 1, 30, tzinfo=UTC)
    assert retry_after_secs("120", now) == 120
    assert retry_after_secs(" 1.5 ", now) == 1.5
    assert retry_after_secs("-3", now) == 0
    assert retry_after_secs("Sun, 22 Nov 2026 01:31:00 GMT", now) == 60
    assert retry_after_secs("Sun, 22 Nov 2026 01:29:00 GMT", now) == 0  # already past
    assert retry_after_secs("soon", now) is None
    assert retry_after_secs("inf", now) is None
    assert retry_after_secs(None, now) is None


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 408])
async def test_server_errors_and_408_are_retried(hook: WebhookReceiver, status: int) -> None:
    hook.script(Answer(status, body=b"oops"))
    sink = await started(hook.url)
    with pytest.raises(HttpSinkError, match=rf"{status}.*oops"):
        await sink.write_batch(records(0, 2))
    await sink.write_batch(records(0, 2))
    await sink.close()
    assert numbers(hook) == [0, 1]


@pytest.mark.anyio
async def test_a_413_halves_the_batch_until_the_pieces_fit(hook: WebhookReceiver) -> None:
    hook.responder = lambda body: Answer(413) if body.count(b"\n") > 3 else Answer()
    sink = await started(hook.url)
    await sink.write_batch(records(0, 10))
    await sink.close()
    assert numbers(hook) == list(range(10))
    assert all(len(r.lines()) <= 3 for r in hook.delivered())


@pytest.mark.anyio
async def test_a_retry_after_a_split_resends_only_what_was_not_delivered(
    hook: WebhookReceiver,
) -> None:
    # 413 for the whole batch, then its first half lands, then the second half meets a 503.
    hook.script(Answer(413), Answer(200), Answer(503))
    sink = await started(hook.url)
    batch = records(0, 8)
    with pytest.raises(HttpSinkError, match="503"):
        await sink.write_batch(batch)
    await sink.write_batch(batch)  # the worker hands the same batch back
    await sink.write_batch(records(8, 2))  # a new batch starts from its beginning
    await sink.close()
    assert numbers(hook) == list(range(10))


@pytest.mark.anyio
async def test_a_refused_batch_without_dead_letter_path_is_kept_and_retried(
    hook: WebhookReceiver,
) -> None:
    hook.script(Answer(400, body=b"bad payload"), Answer(422))
    sink = await started(hook.url)
    with pytest.raises(Refused, match=r"400.*bad payload.*dead_letter_path"):
        await sink.write_batch(records(0, 2))
    with pytest.raises(Refused, match="422"):
        await sink.write_batch(records(0, 2))
    assert "dead_letter_path" in sink.health().detail
    await sink.write_batch(records(0, 2))
    await sink.close()
    assert numbers(hook) == [0, 1]


@pytest.mark.anyio
async def test_a_refused_batch_goes_to_dead_letter_path_and_the_sink_moves_on(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    dead = tmp_path / "refused" / "http.jsonl"
    hook.responder = lambda body: Answer(413) if b'"i":3,' in body else Answer()
    sink = await started(hook.url, dead_letter_path=str(dead))
    await sink.write_batch(records(0, 6))  # record 3 alone is still too large
    hook.script(Answer(400, body=b"no"))
    await sink.write_batch(records(6, 2))
    await sink.write_batch(records(8, 2))
    await sink.close()

    assert numbers(hook) == [0, 1, 2, 4, 5, 8, 9]
    stored = [json.loads(line)["i"] for line in dead.read_bytes().splitlines()]
    assert stored == [3, 6, 7]
    assert sink.stats.dead_lettered == 3
    health = sink.health()
    assert health.healthy
    assert str(dead) in health.detail


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403, 404])
async def test_wrong_token_or_url_is_retried_never_dead_lettered(
    hook: WebhookReceiver, tmp_path: Path, status: int
) -> None:
    dead = tmp_path / "refused.jsonl"
    hook.script(Answer(status))
    sink = await started(hook.url, dead_letter_path=str(dead))
    with pytest.raises(HttpSinkError, match=rf"{status}.*check url and auth_token"):
        await sink.write_batch(records(0, 2))
    await sink.write_batch(records(0, 2))
    await sink.close()
    assert dead.read_bytes() == b""
    assert numbers(hook) == [0, 1]


@pytest.mark.anyio
async def test_no_server_is_an_error_naming_the_url() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{free.getsockname()[1]}/hook"
    sink = await started(url, connect_timeout_secs=2)
    with pytest.raises(HttpSinkError, match="ConnectError"):
        await sink.write_batch(records(0, 1))
    health = sink.health()
    assert not health.healthy
    assert url in health.detail
    await sink.close()


def test_a_record_turns_back_into_its_event() -> None:
    event = json.loads(as_event(record(7)))
    assert event == {
        "schema_id": "urn:test",
        "version": "1",
        "data": {"i": 7, "p": ""},
        "timestamp": "2026-11-22T01:30:21.000007Z",
    }


def hot_path_record(origin: Any, data: dict[str, Any], stamp: str) -> Record:
    """A record laid out as telemetryd.core.ingest builds it."""
    prefix = RECORD_START + stamp.encode() + record_head("urn:x", "2") + msgspec.json.encode(origin)
    body = msgspec.json.encode(data)
    payload = prefix + b"," + body[1:] if data else prefix + b"}"
    return Record(schema_id="urn:x", version="2", payload=payload, received=0.0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
keys = st.text().filter(lambda k: not k.startswith("__"))


@given(
    origin=st.dictionaries(st.text(), st.text() | st.integers() | json_values, max_size=4),
    data=st.dictionaries(keys, json_values, max_size=5),
)
def test_the_fast_encoder_makes_the_same_event_as_decoding(
    origin: dict[str, Any], data: dict[str, Any]
) -> None:
    stamp = "2026-11-22T01:30:21.131970Z"
    made = hot_path_record(origin, data, stamp)
    event = json.loads(EventEncoder().encode(made))
    assert event == json.loads(as_event(made))
    assert event == {"schema_id": "urn:x", "version": "2", "data": data, "timestamp": stamp}


def test_the_fast_encoder_decodes_records_of_another_layout() -> None:
    odd = Record("urn:x", "2", b'{"a": 1, "__timestamp__": "2026-11-22T01:30:21Z"}', 0.0)
    assert json.loads(EventEncoder().encode(odd)) == {
        "schema_id": "urn:x",
        "version": "2",
        "data": {"a": 1},
        "timestamp": "2026-11-22T01:30:21Z",
    }


@pytest.mark.anyio
async def test_events_format_posts_events(hook: WebhookReceiver) -> None:
    sink = await started(hook.url, format="events")
    await sink.write_batch(records(0, 3))
    await sink.close()
    assert [json.loads(line) for line in hook.requests[0].lines()] == [
        json.loads(as_event(r)) for r in records(0, 3)
    ]


def test_settings_defaults() -> None:
    s = settings("https://collector.example.org/api/events/batch")
    assert s.format == "records"
    assert s.headers == {}
    assert s.auth_token is None
    assert s.gzip is False
    assert s.timeout_secs == 30
    assert s.connect_timeout_secs == 5
    assert s.dead_letter_path is None
    assert TOKEN not in repr(settings("http://h/", auth_token=TOKEN))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"url": "ftp://h/x"}, "http:// or https://"),
        ({"url": "http:///x"}, "with a host"),
        ({"format": "json"}, "format"),
        ({"headers": {"Content-Type": "text/plain"}}, "sets Content-Type itself"),
        ({"headers": {"bad name": "x"}}, "not a valid header name"),
        ({"headers": {"X-A": "a\r\nX-B: b"}}, "line break"),
        ({"auth_token": "a", "auth_token_file": "f"}, "not both"),
        ({"auth_token": "a", "headers": {"Authorization": "x"}}, "exclude each other"),
        ({"timeout_secs": 0}, "timeout_secs"),
        ({"timeout": 5}, "timeout"),
    ],
)
def test_settings_reject_bad_values_clearly(bad: dict[str, Any], message: str) -> None:
    values = {"url": "http://127.0.0.1:1/hook"} | bad
    with pytest.raises(ValidationError, match=message):
        settings(**values)


@pytest.mark.anyio
async def test_an_unreadable_token_file_fails_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-token"
    sink = HttpSink(settings("http://127.0.0.1:1/", auth_token_file=str(missing)))
    with pytest.raises(OSError, match="auth_token_file"):
        await sink.start()


def test_entry_point_loads_the_http_sink() -> None:
    assert load_sink_class("http") is HttpSink


@given(
    made=st.lists(
        st.tuples(
            st.sampled_from([{"user": "alice"}, {"user": "bob", "uid": 1}, {}]),
            st.dictionaries(keys, json_values, max_size=3),
            st.sampled_from(["2026-11-22T01:30:21.131970Z", "2026-11-22T01:30:22.000001Z"]),
        ),
        max_size=12,
    )
)
def test_one_encoder_keeps_every_record_of_a_stream_its_own_event(
    made: list[tuple[dict[str, Any], dict[str, Any], str]],
) -> None:
    # The encoder reuses the last record's prefix (time, schema, origin) for its neighbours:
    # a record with another time, origin or no data must never be taken for one of them.
    encoder = EventEncoder()
    for origin, data, stamp in made:
        record = hot_path_record(origin, data, stamp)
        event = json.loads(encoder.encode(record))
        assert event == {"schema_id": "urn:x", "version": "2", "data": data, "timestamp": stamp}


@pytest.mark.anyio
async def test_batches_in_flight_each_resume_their_own_split(hook: WebhookReceiver) -> None:
    # batches_in_flight = 2: two batches split by 413 at once, each failing once between its
    # pieces, then retried; each resends only its own undelivered half.
    failed: set[bytes] = set()

    def responder(body: bytes) -> Answer:
        if body.count(b"\n") > 4:
            return Answer(413)
        first = body.split(b"\n")[0]
        second_half = b'"i":4,' in body or b'"i":14,' in body
        if second_half and first not in failed:
            failed.add(first)
            return Answer(503)
        return Answer()

    hook.responder = responder
    sink = await started(hook.url, batches_in_flight=2)
    a, b = records(0, 8), records(10, 8)

    async def deliver(batch: list[Record]) -> None:
        for _ in range(3):
            try:
                await sink.write_batch(batch)
                return
            except HttpSinkError:
                await anyio.lowlevel.checkpoint()  # the worker retries the same batch

    async with anyio.create_task_group() as tg:
        tg.start_soon(deliver, a)
        tg.start_soon(deliver, b)
    await sink.close()
    assert sorted(numbers(hook)) == [*range(8), *range(10, 18)]  # each event once
