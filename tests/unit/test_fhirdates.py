"""FHIR dates as time ranges, at every precision and at both ends of the calendar."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import InvalidRequest
from core.fhirdates import DATE_MAX, DATE_MIN, approximate, parse_instant, parse_range, span
from storage.search.values import date_range


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", utc(2020, 1, 1), utc(2021, 1, 1)),
        ("2020-02", utc(2020, 2, 1), utc(2020, 3, 1)),
        ("2021-02", utc(2021, 2, 1), utc(2021, 3, 1)),
        ("2020-02-29", utc(2020, 2, 29), utc(2020, 3, 1)),
        ("2020-06-15T10:30+02:00", utc(2020, 6, 15, 8, 30), utc(2020, 6, 15, 8, 31)),
        ("2020-06-15T10:30:15Z", utc(2020, 6, 15, 10, 30, 15), utc(2020, 6, 15, 10, 30, 16)),
        (
            "2020-06-15T10:30:15.25Z",
            utc(2020, 6, 15, 10, 30, 15, 250000),
            utc(2020, 6, 15, 10, 30, 15, 250001),
        ),
    ],
)
def test_a_date_covers_the_range_of_its_precision(value: str, low: datetime, high: datetime) -> None:
    assert parse_range(value) == (low, high)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("9999", utc(9999, 1, 1), DATE_MAX),
        ("9999-12", utc(9999, 12, 1), DATE_MAX),
        ("9999-12-31", utc(9999, 12, 31), DATE_MAX),
        ("9999-12-31T23:59:59Z", utc(9999, 12, 31, 23, 59, 59), DATE_MAX),
        ("9999-12-31T23:59:59.999999Z", DATE_MAX, DATE_MAX),
        ("9999-12-31T23:00:00-05:00", DATE_MAX, DATE_MAX),
        ("0001", DATE_MIN, utc(2, 1, 1)),
        ("0001-01-01", DATE_MIN, utc(1, 1, 2)),
        ("0001-01-01T00:00:00+05:00", DATE_MIN, DATE_MIN),
        ("0001-01-01T04:00:00+05:00", DATE_MIN, DATE_MIN),
        ("0001-01-01T06:00:00+05:00", utc(1, 1, 1, 1), utc(1, 1, 1, 1, 0, 1)),
    ],
)
def test_a_date_at_either_end_of_the_calendar_is_a_range_clamped_to_what_can_be_stored(
    value: str, low: datetime, high: datetime
) -> None:
    # Given a date whose range reaches past year 9999 or before year 1, When it is parsed
    # Then the range is clamped to the representable instants, never an overflow
    assert parse_range(value) == (low, high)
    # And the index's fast path (full dates and instants) gives the same range
    assert date_range(value) == (low, high)


def test_ap_widening_clamps_at_year_one_and_at_year_9999() -> None:
    now = utc(2024, 1, 1)
    assert approximate(*parse_range("9999-12-31"), now)[1] == DATE_MAX
    assert approximate(*parse_range("0001-01-01"), now)[0] == DATE_MIN
    low, high = approximate(*parse_range("2024-01-01"), now)
    assert (low, high) == (utc(2023, 12, 31, 23, 59, 59), utc(2024, 1, 2, 0, 0, 1))


def test_span_clamps_where_a_step_or_a_time_zone_leaves_the_calendar() -> None:
    from datetime import timedelta, timezone

    east = timezone(timedelta(hours=5))
    assert span(datetime(1, 1, 1, tzinfo=east), timedelta(seconds=1)) == (DATE_MIN, DATE_MIN)
    assert span(utc(9999, 12, 31, 23, 59, 59), timedelta(days=1)) == (utc(9999, 12, 31, 23, 59, 59), DATE_MAX)


@pytest.mark.parametrize(
    "value",
    ["0000", "10000", "2020-13", "2020-02-30", "2020-01-01T24:00:00Z", "2020-01-01T10:00:00+24:00",
     "\u0661\u0669\u0667\u0660", "2020-1-1", "", "yesterday"],
)  # fmt: skip
def test_what_is_not_a_fhir_date_is_refused_as_bad_input(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_instant(value)
    assert date_range(value) is None
