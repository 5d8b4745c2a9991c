"""Bodies with Content-Encoding: gzip are decoded within the body limit; other codings are 415."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.sources.http.content_encoding import BadBody, content_coding, gunzip
from telemetryd.sources.http.messages import Response
from tests.support.config_text import http_config
from tests.support.daemon_process import DaemonProcess, http_port
from tests.support.http_client import jupyter_event
from tests.support.records import records_so_far
from tests.support.waiting import wait_for

LIMIT = 64 * 1024


def ndjson(prefix: str, count: int) -> bytes:
    return b"".join(
        json.dumps(jupyter_event(f"{prefix}{i}")).encode() + b"\n" for i in range(count)
    )


@pytest.mark.parametrize(
    ("value", "coding"),
    [(b"gzip", "gzip"), (b"x-gzip", "gzip"), (b"GZIP", "gzip"), (b"identity", None), (b"", None)],
)
def test_codings_we_read(value: bytes, coding: str | None) -> None:
    assert content_coding([(b"content-encoding", value)]) == coding


@pytest.mark.parametrize("value", [b"br", b"deflate", b"gzip, gzip", b"zstd"])
def test_codings_we_do_not_read_are_415(value: bytes) -> None:
    answer = content_coding([(b"content-encoding", value)])
    assert isinstance(answer, Response)
    assert answer.status == 415
    assert value.decode() in json.loads(answer.body)["message"]


def test_a_gzip_bomb_is_413_without_expanding_it() -> None:
    bomb = gzip.compress(b"\0" * (100 * LIMIT))  # 6.4 MB of zeros in a few kB
    assert len(bomb) < LIMIT
    with pytest.raises(BadBody) as e:
        gunzip(bomb, LIMIT)
    assert e.value.response.status == 413


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(b'{"a": 1}\n')[:-5],  # truncated
        gzip.compress(b'{"a": 1}\n') + b"trailing",
    ],
)
def test_a_body_that_is_not_whole_gzip_is_400(body: bytes) -> None:
    with pytest.raises(BadBody) as e:
        gunzip(body, LIMIT)
    assert e.value.response.status == 400
    assert json.loads(e.value.response.body)["reason"] == "invalid_gzip"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_body_decodes_or_is_answered(body: bytes) -> None:
    """The decoder fuzzed: any bytes are decoded or answered 400/413, nothing else raises."""
    for data in (body, gzip.compress(body), gzip.compress(body)[: len(body) // 2 + 10]):
        status = 200
        try:
            out = gunzip(data, LIMIT)
        except BadBody as e:
            status = e.response.status
        else:
            assert out == zlib.decompress(data, wbits=31)
        assert status in (200, 400, 413)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    workdir = tmp_path_factory.mktemp("gzip")
    config = http_config(workdir, server=f"http_max_body_bytes = {LIMIT}")
    with DaemonProcess(workdir, config) as daemon:
        yield daemon, workdir


def test_a_gzip_batch_is_accepted_as_if_sent_plain(daemon: tuple[DaemonProcess, Path]) -> None:
    process, workdir = daemon
    url = f"http://127.0.0.1:{http_port(process)}"
    body = gzip.compress(ndjson("gz-", 200))
    response = httpx.post(
        f"{url}/api/events/batch",
        content=body,
        headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 200
    single = httpx.post(
        f"{url}/api/events",
        content=gzip.compress(json.dumps(jupyter_event("gz-single")).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert single.status_code == 204
    events = workdir / "out" / "events.jsonl"
    wait_for(
        lambda: len([r for r in records_so_far(events) if r["path"].startswith("gz-")]) == 201,
        10,
        "201 records",
    )


def test_bad_codings_are_answered_and_cost_no_event(daemon: tuple[DaemonProcess, Path]) -> None:
    process, workdir = daemon
    url = f"http://127.0.0.1:{http_port(process)}"
    headers = {"content-type": "application/x-ndjson"}
    answers = [
        httpx.post(
            f"{url}/api/events/batch",
            content=ndjson("br-", 3),
            headers=headers | {"content-encoding": "br"},
        ),
        httpx.post(
            f"{url}/api/events/batch",
            content=gzip.compress(ndjson("big-", 2000)),  # over 64 KiB once decoded
            headers=headers | {"content-encoding": "gzip"},
        ),
        httpx.post(
            f"{url}/api/events/batch",
            content=b"garbage",
            headers=headers | {"content-encoding": "gzip"},
        ),
    ]
    assert [a.status_code for a in answers] == [415, 413, 400]
    assert [a.json()["reason"] for a in answers] == [
        "unsupported_media_type",
        "body_too_large",
        "invalid_gzip",
    ]
    ok = httpx.post(f"{url}/api/events/batch", content=ndjson("after-", 2), headers=headers)
    assert ok.status_code == 200
    events = workdir / "out" / "events.jsonl"
    wait_for(lambda: any(r["path"] == "after-1" for r in records_so_far(events)), 10, "after-1")
    assert not any(r["path"].startswith(("br-", "big-")) for r in records_so_far(events))
