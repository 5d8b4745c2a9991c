"""`__origin__` is built in one place (telemetryd.core.origin): what the daemon authenticated,
in a fixed key order, with nothing unset written."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from telemetryd.core.origin import Origin, of_remote, of_unix_peer

ORDER = ["transport", "user", "kind", "uid", "gid", "pid", "remote"]
names = st.none() | st.text(min_size=1, max_size=20)
ids = st.none() | st.integers(min_value=0, max_value=2**31 - 1)


@given(
    st.fixed_dictionaries(
        {
            "transport": st.sampled_from(["unix", "http"]),
            "user": names,
            "kind": st.none() | st.just("service"),
            "uid": ids,
            "gid": ids,
            "pid": ids,
            "remote": st.none() | st.ip_addresses().map(str),
        }
    )
)
def test_an_origin_writes_what_is_set_in_one_order(fields: dict[str, Any]) -> None:
    decoded = json.loads(Origin(**fields).encode())
    assert decoded == {key: value for key, value in fields.items() if value is not None}
    assert list(decoded) == [key for key in ORDER if key in decoded]


@given(peer_user=names, token_user=st.text(min_size=1, max_size=20))
def test_a_verified_token_is_the_user_whatever_the_peer_said(
    peer_user: str | None, token_user: str
) -> None:
    peer = Origin("http", user=peer_user, uid=1000, gid=1000, pid=7)
    decoded = json.loads(peer.as_user(token_user).encode())
    assert decoded == {"transport": "http", "user": token_user, "uid": 1000, "gid": 1000, "pid": 7}


def test_a_unix_peer_is_who_the_kernel_says() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        origin = of_unix_peer(ours, "unix")
    assert (origin.uid, origin.gid, origin.pid) == (os.getuid(), os.getgid(), os.getpid())
    assert origin.transport == "unix"
    assert origin.user is not None  # the tests' user has a name


def test_a_tcp_peer_is_its_address() -> None:
    assert json.loads(of_remote("127.0.0.1", "http").encode()) == {
        "transport": "http",
        "remote": "127.0.0.1",
    }
