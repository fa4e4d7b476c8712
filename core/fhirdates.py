"""FHIR date, dateTime and instant values as time ranges."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from dateutil.relativedelta import relativedelta

from core.errors import InvalidRequest

_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def parse_range(value: str) -> tuple[datetime, datetime]:
    """Return the [low, high) UTC range a FHIR date/dateTime/instant value covers at its precision."""
    m = _DATE.fullmatch(value.strip())
    if not m:
        raise InvalidRequest(f"{value!r} is not a FHIR date, dateTime or instant")
    g = m.groupdict()
    try:
        tz = UTC
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            from datetime import timezone

            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        year = int(g["y"])
        if g["m"] is None:
            low = datetime(year, 1, 1, tzinfo=tz)
            return low.astimezone(UTC), (low + relativedelta(years=1)).astimezone(UTC)
        month = int(g["m"])
        if g["d"] is None:
            low = datetime(year, month, 1, tzinfo=tz)
            return low.astimezone(UTC), (low + relativedelta(months=1)).astimezone(UTC)
        day = int(g["d"])
        if g["H"] is None:
            low = datetime(year, month, day, tzinfo=tz)
            return low.astimezone(UTC), (low + timedelta(days=1)).astimezone(UTC)
        hour, minute = int(g["H"]), int(g["M"])
        if g["S"] is None:
            low = datetime(year, month, day, hour, minute, tzinfo=tz)
            return low.astimezone(UTC), (low + timedelta(minutes=1)).astimezone(UTC)
        micro = int((g["f"] or ".0")[1:7].ljust(6, "0"))
        low = datetime(year, month, day, hour, minute, int(g["S"]), micro, tzinfo=tz)
        step = timedelta(microseconds=1) if g["f"] else timedelta(seconds=1)
        return low.astimezone(UTC), (low + step).astimezone(UTC)
    except ValueError as exc:
        raise InvalidRequest(f"{value!r} is not a valid date: {exc}") from None


def parse_instant(value: str) -> datetime:
    """Return the start of the range a FHIR date/dateTime/instant value names, in UTC."""
    return parse_range(value)[0]


def format_instant(value: datetime) -> str:
    """Format a datetime as a FHIR instant in UTC with milliseconds."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
