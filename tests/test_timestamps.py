from __future__ import annotations

import re

import pytest

from telemetryd.timestamps import InvalidTimestamp, normalise, now_utc


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-11-22T01:30:21.131970Z", "2026-11-22T01:30:21.131970Z"),
        ("2026-11-22T01:30:21Z", "2026-11-22T01:30:21.000000Z"),
        ("2026-11-22T02:30:21.5+01:00", "2026-11-22T01:30:21.500000Z"),
        ("2026-11-22T01:30:21.131970+00:00Z", "2026-11-22T01:30:21.131970Z"),  # jupyter_events
        ("2026-11-22T06:30:21+05:00Z", "2026-11-22T01:30:21.000000Z"),  # Jupyter Server's format
        ("0999-12-31T23:59:59+00:00", "0999-12-31T23:59:59.000000Z"),  # four-digit year, always
    ],
)
def test_timestamps_are_stored_as_utc_rfc3339_with_z(given: str, stored: str) -> None:
    assert normalise(given) == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "now",
        "2026-02-30T00:00:00.000000Z",
        "2026-11-22T01:30:21",
        "2026-11-22 01:30",
        "1700000000",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after 9999 in UTC
    ],
)
def test_bad_timestamps_are_refused_with_the_value(bad: str) -> None:
    with pytest.raises(InvalidTimestamp, match="timestamp"):
        normalise(bad)


def test_now_is_canonical() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now_utc())
