"""RFC 3339 timestamps as records carry them: UTC, microseconds, a `Z` suffix."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_CANONICAL_LENGTH = len("2026-11-22T01:30:21.131970Z")
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)
#: RFC 3339's date-time (section 5.6), as the only shape a client's timestamp may have:
#: datetime.fromisoformat also takes ISO 8601's week dates, basic format, hour-only times and
#: other separators, none of which RFC 3339 allows. `t` is allowed (RFC 3339 allows it and the
#: daemon always took it); a trailing `Z` after an offset is jupyter_events' own form. The
#: ranges of the fields (month 13, hour 24, 30 February) are left to fromisoformat.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:\d\dZ?)", re.ASCII)


class InvalidTimestamp(ValueError):
    pass


def format_utc(moment: datetime) -> str:
    # isoformat, not strftime: glibc's %Y does not pad years before 1000 to four digits.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: (a whole second, its text up to the decimal point): the date and time of day are formatted
#: once a second, not once per call.
_second: list[tuple[float, str]] = [(0.0, "1970-01-01T00:00:00.")]


def now_utc() -> str:
    timestamp = time.time()
    second, prefix = _second[0]
    micros = round((timestamp - second) * 1e6)  # exact: `second` is the timestamp's floor
    if 0 <= micros < 1_000_000:
        return f"{prefix}{micros:06d}Z"
    return format_timestamp(timestamp)  # a new second (or a carry into the next one)


def format_timestamp(timestamp: float) -> str:
    """`datetime.fromtimestamp(timestamp, UTC).strftime(_FORMAT)`, the microseconds rounded as
    datetime rounds them (half to even, a carry into the next second), the rest cached."""
    fraction, whole = math.modf(timestamp)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    cached = _second[0]
    if cached[0] != whole:
        cached = (whole, datetime.fromtimestamp(whole, UTC).strftime(_FORMAT[:-3]))
        _second[0] = cached  # one store: a thread calling at the same time sees one or the other
    return f"{cached[1]}{micros:06d}Z"


def normalise(value: str) -> str:
    """A client's timestamp as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.

    Accepts RFC 3339 with `Z` or an offset, and jupyter_events' own `+00:00Z` form (an offset
    followed by a stray `Z`), which Jupyter Server's POST /api/events expects and which the
    records jupyter_events writes carry; nothing else of ISO 8601. A time without an offset is
    ambiguous and refused. Fractions past microseconds are truncated, as datetime does.
    """
    if len(value) == _CANONICAL_LENGTH and _CANONICAL.fullmatch(value):
        # Already canonical: parsing checks the calendar (no 30 February); no reformat needed.
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise InvalidTimestamp(f"timestamp {value!r} is not a valid RFC 3339 time") from None
        return value
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _not_rfc3339(value)
    text = value[:-1] if match.end(2) - match.start(2) == 7 else value  # +00:00Z: no stray Z
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidTimestamp(
            f"timestamp {value!r} is not a valid RFC 3339 time (a field is out of range)"
        ) from None
    try:
        return format_utc(moment)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise InvalidTimestamp(
            f"timestamp {value!r} is out of range: in UTC it falls before year 1 or after 9999"
        ) from None


def _not_rfc3339(value: str) -> InvalidTimestamp:
    if _RFC3339.fullmatch(value + "Z"):
        return InvalidTimestamp(f"timestamp {value!r} has no UTC offset; add Z or +HH:MM")
    return InvalidTimestamp(
        f"timestamp {value!r} is not an RFC 3339 time such as 2026-11-22T01:30:21.131970Z"
    )
