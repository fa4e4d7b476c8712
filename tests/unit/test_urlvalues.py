"""Integers and ids a request names: only ASCII digits, and never beyond the column they are compared with."""

from __future__ import annotations

import pytest

from core.errors import InvalidRequest
from core.urlvalues import (
    MAX_BIGINT,
    MAX_VERSION,
    bounded_int,
    capped_int,
    etag_version,
    is_job_id,
    version_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("0042", 42), (str(MAX_VERSION), MAX_VERSION), (str(MAX_VERSION + 1), None), ("0", None),
     ("9" * 41, None), ("9" * 5000, None), ("\u00b2", None), ("\u0663", None), ("-1", None), ("1.0", None),
     (" 1", None), ("", None)],
)  # fmt: skip
def test_a_version_id_names_a_version_only_within_the_version_column(text: str, expected: int | None) -> None:
    assert version_number(text) == expected


def test_an_offset_beyond_a_bigint_or_not_in_ascii_digits_is_refused() -> None:
    assert bounded_int("0", "_offset") == 0
    assert bounded_int(str(MAX_BIGINT), "_offset") == MAX_BIGINT
    for text in (str(MAX_BIGINT + 1), "9" * 41, "9" * 5000, "\u00b2", "-1", "x", ""):
        with pytest.raises(InvalidRequest):
            bounded_int(text, "_offset")


def test_a_count_larger_than_the_cap_is_lowered_to_it_and_other_digits_are_refused() -> None:
    assert capped_int("7", "_count", 100) == 7
    assert capped_int("9" * 5000, "_count", 100) == 100
    for text in ("\u00b2", "\u0663", "-1", "1e3"):
        with pytest.raises(InvalidRequest):
            capped_int(text, "_count", 100)


def test_an_etag_names_a_version_or_none() -> None:
    assert etag_version('W/"3"') == 3
    assert etag_version('"3"') == 3
    assert etag_version('W/"' + "9" * 5000 + '"') is None
    assert etag_version('W/"\u00b2"') is None
    assert etag_version("*") is None


def test_a_job_id_is_32_lower_case_hexadecimal_characters() -> None:
    assert is_job_id("0123456789abcdef" * 2)
    for text in ("0123456789ABCDEF" * 2, "0" * 31, "0" * 33, "0" * 31 + "\x00", "../" + "0" * 29):
        assert not is_job_id(text)
