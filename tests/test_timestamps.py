from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from telemetryd.core.timestamps import InvalidTimestamp, normalise, now_utc


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-11-22T01:30:21.131970Z", "2026-11-22T01:30:21.131970Z"),
        ("2026-11-22T01:30:21Z", "2026-11-22T01:30:21.000000Z"),
        ("2026-11-22T02:30:21.5+01:00", "2026-11-22T01:30:21.500000Z"),
        ("2026-11-22T01:30:21.131970+00:00Z", "2026-11-22T01:30:21.131970Z"),  # jupyter_events
        ("2026-11-22T06:30:21+05:00Z", "2026-11-22T01:30:21.000000Z"),  # Jupyter Server's format
        ("0999-12-31T23:59:59+00:00", "0999-12-31T23:59:59.000000Z"),  # four-digit year, always
        ("2026-11-22t01:30:21Z", "2026-11-22T01:30:21.000000Z"),  # RFC 3339 allows a lower-case t
        ("2026-11-22T01:30:21-00:00", "2026-11-22T01:30:21.000000Z"),  # "offset unknown": UTC
        ("2026-11-22T01:30:21.1234567Z", "2026-11-22T01:30:21.123456Z"),  # truncated, as datetime
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
        # ISO 8601 that RFC 3339 is not, all of which datetime.fromisoformat takes:
        "2026-W47-7T01:30:21+00:00",  # week date
        "20261122T013021Z",  # basic format
        "2026-11-22T01Z",  # hour only
        "2026-11-22T01:30Z",  # no seconds
        "2026-11-22 01:30:21Z",  # a space for the T
        "2026-11-22T01:30:21,5Z",  # a decimal comma
        "2026-11-22T01:30:21+0100",  # offset without its colon
        "2026-11-22T01:30:21+01",  # offset without minutes
        "2026-11-22T01:30:21+01:00:30",  # offset with seconds
        "2026-326T01:30:21Z",  # ordinal date
        "2026-11-22T01:30:21.Z",  # a point without digits
        "2026-11-22T01:30:21z",  # datetime never took a lower-case z
        "2026-11-22T24:00:00Z",
        "2026-11-22T01:30:21Z ",
    ],
)
def test_bad_timestamps_are_refused_with_the_value(bad: str) -> None:
    with pytest.raises(InvalidTimestamp, match="timestamp"):
        normalise(bad)


def test_now_is_canonical() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now_utc())


#: RFC 3339's date-time (section 5.6) with its fields' ranges, and jupyter_events' stray Z.
RFC3339 = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\dZ?)",
    re.ASCII,
)


#: ISO 8601's shapes (extended and basic, week and ordinal dates, reduced times, offsets with
#: and without a colon or seconds), with values in range, RFC 3339's among them.
_HOUR, _SIXTY = "([01][0-9]|2[0-3])", "[0-5][0-9]"
ISO8601_LIKE = (
    r"[0-9]{4}-?(W(0[1-9]|[1-4][0-9]|5[0-2])-?[1-7]|(0[0-9][1-9]|[12][0-9]{2}|3[0-5][0-9])"
    r"|(0[1-9]|1[0-2])-?(0[1-9]|1[0-9]|2[0-8]))"
    rf"([Tt ]{_HOUR}(:?{_SIXTY}(:?{_SIXTY}([.,][0-9]{{0,9}})?)?)?)?"
    rf"([Zz]|[+-]{_HOUR}(:?{_SIXTY}(:?{_SIXTY})?)?)?Z?"
)


@given(
    st.one_of(
        st.from_regex(ISO8601_LIKE, fullmatch=True),
        st.text(alphabet="0123456789-:.+TtZzW ,", max_size=40),
    )
)
@example("2026-W47-7T01:30:21+00:00")
@example("20261122T013021Z")
@example("2026-11-22T01Z")
def test_whatever_is_accepted_is_rfc3339(text: str) -> None:
    try:
        normalise(text)
    except InvalidTimestamp:
        return
    assert RFC3339.fullmatch(text), text


@st.composite
def rfc3339_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """An RFC 3339 string and the instant it names (to the microsecond: more digits are cut)."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    fraction = draw(st.from_regex(r"(\.[0-9]{1,9})?", fullmatch=True))
    moment = moment.replace(microsecond=int(fraction[1:7].ljust(6, "0")))
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign = "-" if minutes < 0 else "+"
    offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if minutes == 0:
        offset = draw(st.sampled_from(["Z", "+00:00", "-00:00", "+00:00Z"]))
    text = f"{moment.date().isoformat()}{draw(st.sampled_from('Tt'))}"
    text += f"{moment.time().isoformat(timespec='seconds')}{fraction}{offset}"
    return text, moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))


@given(rfc3339_times())
def test_every_rfc3339_time_is_accepted_as_its_instant(case: tuple[str, datetime]) -> None:
    text, moment = case
    stored = normalise(text)
    assert stored.endswith("Z")
    assert datetime.fromisoformat(stored) == moment
