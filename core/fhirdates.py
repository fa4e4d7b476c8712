"""FHIR date, dateTime and instant values as time ranges.

Every range is computed in whole microseconds since 1970 and only then turned into a ``datetime``, clamped
to the instants Python (and so the index) can hold, ``DATE_MIN`` (0001-01-01T00:00:00Z) to ``DATE_MAX``
(9999-12-31T23:59:59.999999Z). A value at either end of the calendar (``9999-12-31``,
``0001-01-01T00:00+05:00``, an ``ap`` search around either) is a range like any other, never an overflow.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

from core.errors import InvalidRequest

DATE_MIN = datetime.min.replace(tzinfo=UTC)
DATE_MAX = datetime.max.replace(tzinfo=UTC)

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_MIN_US = (datetime.min - _EPOCH) // _US
_MAX_US = (datetime.max - _EPOCH) // _US
_SECOND_US = 1_000_000
_MINUTE_US = 60 * _SECOND_US
_DAY_US = 86_400 * _SECOND_US


def micros(value: datetime) -> int:
    """Return an aware datetime as microseconds since 1970 in UTC (exact at any year, never overflowing)."""
    offset = value.utcoffset() or timedelta(0)
    return (value.replace(tzinfo=None) - _EPOCH) // _US - offset // _US


def instant(value_us: int) -> datetime:
    """Return the UTC datetime of microseconds since 1970, clamped to ``DATE_MIN`` .. ``DATE_MAX``."""
    clamped = min(max(value_us, _MIN_US), _MAX_US)
    return (_EPOCH + timedelta(microseconds=clamped)).replace(tzinfo=UTC)


def span(start: datetime, step: timedelta) -> tuple[datetime, datetime]:
    """Return the UTC range [start, start + step) of an aware datetime, clamped at the calendar's ends."""
    try:
        low = start.astimezone(UTC)
        return low, low + step
    except OverflowError:
        low_us = micros(start)
        return instant(low_us), instant(low_us + step // _US)


def approximate(low: datetime, high: datetime, now: datetime | None = None) -> tuple[datetime, datetime]:
    """Return [low, high) widened by a tenth of its distance from now plus a second (the ``ap`` prefix)."""
    now_us = micros(now or datetime.now(UTC))
    low_us, high_us = micros(low), micros(high)
    gap = abs(now_us - low_us) // 10 + _SECOND_US
    return instant(low_us - gap), instant(high_us + gap)


def _offset_us(tz: str | None) -> int:
    if not tz or tz == "Z":
        return 0
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(f"the time zone offset {tz} is out of range")
    return (1 if tz[0] == "+" else -1) * (hours * 60 + minutes) * _MINUTE_US


def parse_range(value: str) -> tuple[datetime, datetime]:
    """Return the [low, high) UTC range a FHIR date/dateTime/instant value covers at its precision."""
    m = _DATE.fullmatch(value.strip())
    if not m:
        raise InvalidRequest(f"{value!r} is not a FHIR date, dateTime or instant")
    g = m.groupdict()
    try:
        year, month, day = int(g["y"]), int(g["m"] or 1), int(g["d"] or 1)
        hour, minute, second = int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0)
        fraction = int((g["f"] or ".0")[1:7].ljust(6, "0"))
        start = datetime(year, month, day, hour, minute, second, fraction)
        offset = _offset_us(g["tz"])
    except ValueError as exc:
        raise InvalidRequest(f"{value!r} is not a valid date: {exc}") from None
    if g["m"] is None:
        step = (366 if calendar.isleap(year) else 365) * _DAY_US
    elif g["d"] is None:
        step = calendar.monthrange(year, month)[1] * _DAY_US
    elif g["H"] is None:
        step = _DAY_US
    elif g["S"] is None:
        step = _MINUTE_US
    else:
        step = 1 if g["f"] else _SECOND_US
    low_us = (start - _EPOCH) // _US - offset
    return instant(low_us), instant(low_us + step)


def parse_instant(value: str) -> datetime:
    """Return the start of the range a FHIR date/dateTime/instant value names, in UTC."""
    return parse_range(value)[0]


def format_instant(value: datetime) -> str:
    """Format a datetime as a FHIR instant in UTC with milliseconds."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
