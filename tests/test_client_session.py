"""The client's buffer and protocol core without sockets: acknowledgements settle the buffer,
rejections name the right event, a reconnect writes again exactly what was not acknowledged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetryd.client.encoding import LineEncoder, raw_entry, render
from telemetryd.client.outbox import Outbox
from telemetryd.client.session import ProtocolError, Session

SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"
HELLO = b'{"hello":"telemetryd","protocol":1,"server":"telemetryd/0.1.0","max_line_bytes":1024}\n'


def fill(outbox: Outbox, count: int, start: int = 0) -> None:
    encoder = LineEncoder()
    for i in range(start, start + count):
        outbox.put(encoder.entry(SCHEMA, "1", {"action": "save", "path": f"p{i}"}))


def paths(written: bytes) -> list[str]:
    return [json.loads(line)["data"]["path"] for line in written.splitlines()]


def greeted(outbox: Outbox, **kwargs: Any) -> Session:
    session = Session(outbox, **kwargs)
    assert session.next_batch() == b""  # nothing before the daemon's hello
    assert session.receive(HELLO) == []
    assert session.greeted
    assert session.server == "telemetryd/0.1.0"
    assert session.max_line_bytes == 1024
    return session


def test_lines_are_the_protocols_event_lines() -> None:
    outbox = Outbox(10, 1 << 20)
    encoder = LineEncoder()
    outbox.put(encoder.entry(SCHEMA, 1, {"action": "save", "path": "a"}, "2026-11-22T01:30:21Z"))
    outbox.put(encoder.entry(SCHEMA, "1", {"action": "save", "path": "b"}))
    outbox.put(raw_entry(b'{"not": "checked by the client"}\r\n'))
    lines = render(outbox.take(10)[1]).splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    first, second, third = (json.loads(line) for line in lines)
    assert first == {
        "schema_id": SCHEMA,
        "version": "1",
        "data": {"action": "save", "path": "a"},
        "timestamp": "2026-11-22T01:30:21Z",
    }
    assert second["version"] == "1"
    assert second["timestamp"].endswith("Z")
    assert len(second["timestamp"]) == len("2026-11-22T01:30:21.131970Z")
    assert third == {"not": "checked by the client"}


def test_an_ack_settles_the_lines_it_covers_one_byte_at_a_time() -> None:
    outbox = Outbox(100, 1 << 20)
    fill(outbox, 5)
    session = greeted(outbox)
    assert paths(session.next_batch()) == ["p0", "p1", "p2", "p3", "p4"]
    assert session.next_batch() == b""
    for byte in b'{"ack":3}\n':
        session.receive(bytes([byte]))
    assert len(outbox) == 2
    assert outbox.head == 4
    session.receive(b'{"ack":5}\n{"ack":5}\n')  # a repeated ack changes nothing
    assert len(outbox) == 0
    assert outbox.stats().acknowledged == 5


def test_a_rejection_names_the_event_and_its_schema() -> None:
    outbox = Outbox(100, 1 << 20)
    fill(outbox, 3)
    session = greeted(outbox)
    session.next_batch()
    (rejection,) = session.receive(
        b'{"rejected":2,"reason":"invalid_data","message":"data.action is wrong"}\n{"ack":3}\n'
    )
    assert (rejection.seq, rejection.reason, rejection.schema_id) == (2, "invalid_data", SCHEMA)
    assert rejection.message == "data.action is wrong"
    assert outbox.stats().rejected == {"invalid_data": 1}
    assert len(outbox) == 0


def test_a_new_connection_writes_again_what_was_not_acknowledged() -> None:
    outbox = Outbox(100, 1 << 20)
    fill(outbox, 4)
    first = greeted(outbox)
    first.next_batch()
    first.receive(b'{"ack":2}\n')
    fill(outbox, 2, start=4)
    second = greeted(outbox, written_upto=first.next_seq)
    assert paths(second.next_batch()) == ["p2", "p3", "p4", "p5"]
    assert second.resent == 2  # p2 and p3 were written before; p4 and p5 are new
    second.receive(b'{"ack":4}\n')  # line numbers start again at 1 on each connection
    assert len(outbox) == 0


def test_events_dropped_while_unwritten_do_not_shift_the_line_numbers() -> None:
    outbox = Outbox(4, 1 << 20)
    fill(outbox, 2)  # p0, p1
    session = greeted(outbox, batch_events=2)
    assert paths(session.next_batch()) == ["p0", "p1"]  # lines 1, 2
    fill(outbox, 6, start=2)  # p2..p7: the oldest six are dropped, p4..p7 stay
    assert outbox.stats().dropped == {"buffer_full": 4}
    assert paths(session.next_batch()) == ["p4", "p5"]  # lines 3, 4: a new run
    (rejection,) = session.receive(b'{"rejected":4,"reason":"invalid_data","message":"m"}\n')
    assert rejection.seq == 6  # p5 is event number 6
    session.receive(b'{"ack":3}\n')  # up to p4
    assert outbox.head == 6
    assert paths(session.next_batch()) == ["p6", "p7"]
    session.receive(b'{"ack":6}\n')
    assert len(outbox) == 0


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b'{"error":"too_many_connections","message":"at most 1"}\n', "too_many_connections"),
        (b"HTTP/1.1 400 Bad Request\r\n", "not JSON"),
        (b'{"hello":"other","protocol":1}\n', "not telemetryd"),
        (b'{"hello":"telemetryd","protocol":2}\n', "protocol version"),
    ],
)
def test_a_peer_that_is_not_a_telemetryd_we_speak_with_is_refused(
    reply: bytes, message: str
) -> None:
    session = Session(Outbox(10, 1 << 20))
    with pytest.raises(ProtocolError, match=message):
        session.receive(reply)


def test_an_ack_of_lines_never_written_is_a_protocol_error() -> None:
    outbox = Outbox(10, 1 << 20)
    fill(outbox, 1)
    session = greeted(outbox)
    session.next_batch()
    with pytest.raises(ProtocolError, match="acknowledged line 2 of 1"):
        session.receive(b'{"ack":2}\n')


def test_a_reply_line_without_end_is_bounded() -> None:
    session = greeted(Outbox(10, 1 << 20))
    with pytest.raises(ProtocolError, match="over 1 MiB"):
        session.receive(b"x" * ((1 << 20) + 1))


def test_the_buffer_keeps_the_newest_events_within_its_byte_limit() -> None:
    encoder = LineEncoder()
    one = encoder.entry(SCHEMA, "1", {"action": "save", "path": "p0"})  # as long as p7
    outbox = Outbox(1000, one[3] * 3)
    fill(outbox, 10)
    stats = outbox.stats()
    assert stats.buffered == 3
    assert stats.buffered_bytes <= one[3] * 3
    assert stats.dropped == {"buffer_full": 7}
    assert paths(render(outbox.take(10)[1])) == ["p7", "p8", "p9"]


# --- properties -----------------------------------------------------------------------------

#: Actions of a run: emit n events, write a batch, acknowledge k more lines, reconnect.
actions = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), st.integers(1, 20)),
        st.tuples(st.just("write"), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 30)),
        st.tuples(st.just("reconnect"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(actions, st.integers(1, 40), st.integers(1, 8))
def test_every_event_is_settled_once_or_dropped_and_counted(
    steps: list[tuple[str, int]], capacity: int, batch: int
) -> None:
    """Whatever the interleaving of emits, writes, acks and reconnects: after a final
    connection acknowledges everything, every event emitted was acknowledged or dropped as
    counted, the daemon saw each acknowledged event at least once, the events written on one
    connection are in order, and nothing was written twice on one connection."""
    outbox = Outbox(capacity, 1 << 30)
    emitted = 0
    seen: list[str] = []  # every line the "daemon" received, across connections
    session = greeted(outbox, batch_events=batch)
    connection: list[str] = []

    def write() -> None:
        data = session.next_batch()
        connection.extend(paths(data))
        seen.extend(paths(data))

    for action, n in steps:
        if action == "emit":
            fill(outbox, n, start=emitted)
            emitted += n
        elif action == "write":
            write()
        elif action == "ack":
            line = min(session.unacknowledged, n) + (len(connection) - session.unacknowledged)
            session.receive(json.dumps({"ack": line}).encode() + b"\n")
        else:
            assert len(set(connection)) == len(connection)
            session = greeted(outbox, batch_events=batch, written_upto=session.next_seq)
            connection = []
    while True:  # at last, the daemon acknowledges everything written, until nothing is left
        if connection:
            session.receive(json.dumps({"ack": len(connection)}).encode() + b"\n")
        before = len(connection)
        write()
        if len(connection) == before:
            break
    numbers = [int(p[1:]) for p in connection]
    assert numbers == sorted(numbers)
    assert len(set(connection)) == len(connection)
    stats = outbox.stats()
    assert stats.buffered == 0
    assert stats.emitted == emitted
    assert stats.acknowledged + stats.dropped.get("buffer_full", 0) == emitted
    assert len(set(seen)) >= stats.acknowledged


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.binary(max_size=64)
        | st.sampled_from(
            [
                b'{"ack":1}\n',
                b'{"rejected":1,"reason":"r","message":"m"}\n',
                b"\n",
                b'{"ack":-1}\n',
                b'{"ack":"1"}\n',
                b"[1]\n",
                b'{"rejected":99}\n',
                b"\xff\n",
                b'{"error":"x"}\n',
            ]
        ),
        max_size=20,
    )
)
def test_any_reply_bytes_settle_or_raise_protocol_error_only(chunks: list[bytes]) -> None:
    """The client's parser of the daemon's replies, fuzzed: whatever a peer sends, the client
    settles events or drops the connection with ProtocolError; it never fails otherwise."""
    outbox = Outbox(100, 1 << 20)
    fill(outbox, 3)
    session = greeted(outbox)
    session.next_batch()
    try:
        for chunk in chunks:
            for rejection in session.receive(chunk):
                assert 1 <= rejection.seq <= 3
    except ProtocolError:
        pass
    assert 0 <= len(outbox) <= 3
