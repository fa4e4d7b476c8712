"""Numbers and ids a request names (path segments, query parameters, ETags), parsed once and bounded to what
the columns they are compared with can hold, so that no such value reaches SQL out of range.

Only ASCII digits count as digits (``str.isdigit`` also accepts ``²`` and ``٣``), and no value is handed to
``int()`` longer than the column could hold (Python refuses to convert more than 4,300 digits).
"""

from __future__ import annotations

import re

from core.errors import InvalidRequest

MAX_VERSION = 2**31 - 1  # resource.version is an integer column
MAX_BIGINT = 2**63 - 1  # OFFSET and bigint ids
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_JOB_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
_ETAG = re.compile(r'\s*(?:W/)?"?([0-9]+)"?\s*', re.ASCII)


def is_digits(text: str) -> bool:
    """Return True if ``text`` is one or more ASCII digits."""
    return _DIGITS.fullmatch(text) is not None


def bounded_int(text: str, name: str, *, maximum: int = MAX_BIGINT) -> int:
    """Return ``text`` as an integer in 0..maximum, else raise InvalidRequest (400)."""
    digits = text.strip()
    if not is_digits(digits):
        raise InvalidRequest(f"{name} must be a non-negative integer, not {text[:40]!r}")
    stripped = digits.lstrip("0") or "0"
    if len(stripped) > len(str(maximum)) or int(stripped) > maximum:
        raise InvalidRequest(f"{name} must be at most {maximum}, not {text[:40]!r}")
    return int(stripped)


def capped_int(text: str, name: str, cap: int) -> int:
    """Return ``text`` as a non-negative integer, lowered to ``cap`` when larger (``_count``)."""
    digits = text.strip()
    if not is_digits(digits):
        raise InvalidRequest(f"{name} must be a non-negative integer, not {text[:40]!r}")
    stripped = digits.lstrip("0") or "0"
    return cap if len(stripped) > len(str(cap)) else min(int(stripped), cap)


def version_number(text: str) -> int | None:
    """Return the version a version id names (1..MAX_VERSION), or None if no stored version can have it."""
    if not is_digits(text):
        return None
    stripped = text.lstrip("0")
    if not stripped or len(stripped) > len(str(MAX_VERSION)) or int(stripped) > MAX_VERSION:
        return None
    return int(stripped)


def etag_digits(value: str) -> str | None:
    """Return the digits of a version ETag (``W/"3"``, ``"3"`` or ``3``), or None if ``value`` is not one."""
    m = _ETAG.fullmatch(value)
    return m.group(1) if m else None


def etag_version(value: str) -> int | None:
    """Return the version a version ETag names, or None if it is not one or names no possible version."""
    digits = etag_digits(value)
    return version_number(digits) if digits is not None else None


def is_job_id(text: str) -> bool:
    """Return True if ``text`` has the shape of a job id (32 lower-case hexadecimal characters)."""
    return _JOB_ID.fullmatch(text) is not None
