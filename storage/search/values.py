"""Turn typed FHIR values into the index values of each search-parameter type.

Every converter takes the ``(value, FHIR type)`` pairs a compiled expression found and returns the value
tuples of one side table (without the partition, type, parameter and surrogate-id columns).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from core.errors import InvalidRequest
from core.fhirdates import DATE_MAX, DATE_MIN, parse_range, span
from core.fhirtypes import resource_types
from storage.search.elements import QUANTITY_TYPES
from storage.search.fhirpath import Item

NUMBER_MIN = Decimal("-1e21")
NUMBER_MAX = Decimal("1e21")
# The finest digit an indexed number keeps: PostgreSQL's numeric holds 16,383 digits after the point, and no
# JSON number Bulkhead stores (a double) has a digit below 1e-330.
NUMBER_FINEST_EXPONENT = -400
# Index keys must stay well under PostgreSQL's B-tree limit (about 2.7 KB): values are clipped (in bytes
# of UTF-8) before they are indexed. Matching clips search values the same way.
STRING_INDEX_CHARS = 200
TOKEN_BYTES = 600
URI_BYTES = 1000
_REFERENCE = re.compile(
    r"(?:(?P<base>[a-z][a-z0-9+.-]*://.+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_PRIMITIVE_TEXT = frozenset(
    {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid", "xhtml", "base64Binary"}
)

Converter = Callable[[list[Item]], list[tuple[Any, ...]]]


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Return ``text`` folded for matching: lower case, accents removed, spaces collapsed."""
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def _strings_of(value: Any, ftype: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if type(value) is not dict:
        return []
    out: list[str] = []
    if ftype == "HumanName":
        keys: tuple[str, ...] = ("text", "family", "given", "prefix", "suffix")
    elif ftype == "Address":
        keys = ("text", "line", "city", "district", "state", "postalCode", "country")
    elif ftype == "CodeableConcept":
        out.extend(c["display"] for c in value.get("coding", ()) if isinstance(c.get("display"), str))
        keys = ("text",)
    elif ftype in {"Coding", "Reference"}:
        keys = ("display",)
    elif ftype in {"ContactPoint", "Identifier"}:
        keys = ("value",)
    else:
        keys = ("text",)
    for key in keys:
        item = value.get(key)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(x for x in item if isinstance(x, str))
    return out


def string_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return (normalized, exact) pairs: one per name part, address part or string."""
    out: list[tuple[Any, ...]] = []
    for value, ftype in items:
        if type(value) is str:
            if value:
                out.append((normalize(value)[:STRING_INDEX_CHARS], value))
            continue
        for text in _strings_of(value, ftype):
            if text:
                out.append((normalize(text)[:STRING_INDEX_CHARS], text))
    return list(dict.fromkeys(out)) if len(out) > 1 else out


def clip(text: str, limit: int) -> str:
    """Return ``text`` cut to at most ``limit`` bytes of UTF-8 (at a character boundary)."""
    if len(text) <= limit // 4 or (text.isascii() and len(text) <= limit):
        return text
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _cut(text: Any) -> str | None:
    if type(text) is not str or not text:
        return None
    return text if len(text) <= TOKEN_BYTES // 4 else clip(text, TOKEN_BYTES)


def _text(text: Any) -> str | None:
    return normalize(text)[:STRING_INDEX_CHARS] if type(text) is str and text else None


def token_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return (system, code, text) triples; ``text`` is the normalized display or text for ``:text``."""
    out: list[tuple[Any, ...]] = []
    add = out.append
    for value, ftype in items:
        kind = type(value)
        if kind is bool:
            add((None, "true" if value else "false", None))
        elif kind is str:
            add((None, _cut(value), None))
        elif kind is not dict:
            continue
        elif ftype == "CodeableConcept" or "coding" in value:
            text = value.get("text")
            for coding in value.get("coding", ()):
                if type(coding) is dict and coding.get("code") is not None:
                    display = _text(coding.get("display") or text)
                    add((_cut(coding.get("system")), _cut(coding["code"]), display))
            if type(text) is str:
                add((None, None, _text(text)))
        elif ftype == "Identifier":
            if value.get("value") is not None:
                type_text = _text((value.get("type") or {}).get("text"))
                add((_cut(value.get("system")), _cut(value["value"]), type_text))
        elif ftype == "ContactPoint":
            if value.get("value") is not None:
                add((_cut(value.get("system")), _cut(value["value"]), None))
        elif value.get("code") is not None:  # Coding, Quantity
            add((_cut(value.get("system")), _cut(value["code"]), _text(value.get("display"))))
        elif type(value.get("value")) is str:
            add((_cut(value.get("system")), _cut(value["value"]), None))
    return list(dict.fromkeys(out)) if len(out) > 1 else out


_ONE_DAY = timedelta(days=1)
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICRO = timedelta(microseconds=1)


@lru_cache(maxsize=65536)
def date_range(text: str) -> tuple[datetime, datetime] | None:
    """Return the [low, high) UTC range of a FHIR date/dateTime/instant, or None if it is not one."""
    n = len(text)
    # Fast path for the common full forms; everything else goes through core.fhirdates.parse_range.
    full = n >= 20 and text[10] == "T" and (text[-1] == "Z" or text[-6] in "+-")
    if (n == 10 or full) and text[4] == "-" and text[7] == "-" and text[:4].isdigit():
        try:
            low = datetime.fromisoformat(text)
        except ValueError:
            return None
        if n == 10:
            return span(low.replace(tzinfo=UTC), _ONE_DAY)
        return span(low, _ONE_MICRO if "." in text else _ONE_SECOND)
    try:
        return parse_range(text)
    except InvalidRequest:
        return None


def _range(text: Any) -> tuple[datetime, datetime] | None:
    return date_range(text) if type(text) is str else None


def date_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return [low, high) datetime ranges in UTC; open period ends become DATE_MIN / DATE_MAX."""
    out: set[tuple[Any, ...]] = set()
    for value, ftype in items:
        if isinstance(value, str):
            found = _range(value)
            if found:
                out.add(found)
        elif type(value) is not dict:
            continue
        elif ftype == "Timing":
            for event in value.get("event", ()):
                found = _range(event)
                if found:
                    out.add(found)
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                out.update(date_values([(bounds, "Period")]))
        elif "start" in value or "end" in value:
            start, end = _range(value.get("start")), _range(value.get("end"))
            if start or end:
                out.add((start[0] if start else DATE_MIN, end[1] if end else DATE_MAX))
    return list(out)


@lru_cache(maxsize=65536)
def parse_reference(reference: str) -> tuple[str | None, str | None, str | None]:
    """Split a reference into (type, id, absolute url); contained (``#x``) references give all None."""
    if reference.startswith("#"):
        return None, None, None
    m = _REFERENCE.fullmatch(reference)
    if m and m.group("type") in resource_types():
        base = m.group("base")
        url = f"{base}/{m.group('type')}/{m.group('id')}" if base else None
        return m.group("type"), m.group("id"), url
    return None, None, clip(reference.split("|", 1)[0], URI_BYTES)


def reference_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return (target type, target id, url): relative references have no url, external ones only a url."""
    out: set[tuple[Any, ...]] = set()
    for value, _ftype in items:
        if isinstance(value, str):
            ref: Any = value
        elif type(value) is dict and "resourceType" not in value:
            ref = value.get("reference")
        else:
            continue
        if isinstance(ref, str) and ref:
            found = parse_reference(ref)
            if found != (None, None, None):
                out.add(found)
    return list(out)


_FINEST = Decimal(1).scaleb(NUMBER_FINEST_EXPONENT)
_WIDE = Context(prec=1000)  # enough digits for any number from NUMBER_MIN to NUMBER_MAX at _FINEST


def holds_number(number: Decimal) -> bool:
    """Return True if ``number`` is one the index holds: finite, within the bounds, no digit below _FINEST."""
    if not number.is_finite() or not NUMBER_MIN <= number <= NUMBER_MAX:
        return False
    exponent = number.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= NUMBER_FINEST_EXPONENT


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    if not number.is_finite() or not NUMBER_MIN < number < NUMBER_MAX:
        return None
    return number if holds_number(number) else number.quantize(_FINEST, context=_WIDE)


def number_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return (low, high) numbers; a single number is its own range, a Range keeps its bounds."""
    out: set[tuple[Any, ...]] = set()
    for value, ftype in items:
        if type(value) is dict:
            if ftype == "Range":
                low = _decimal((value.get("low") or {}).get("value"))
                high = _decimal((value.get("high") or {}).get("value"))
                if low is not None or high is not None:
                    out.add(
                        (low if low is not None else NUMBER_MIN, high if high is not None else NUMBER_MAX)
                    )
                continue
            number = _decimal(value.get("value"))
        else:
            number = _decimal(value)
        if number is not None:
            out.add((number, number))
    return list(out)


def quantity_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return (system, code, unit, low, high) for Quantity (and its kinds), Money and Range values."""
    out: set[tuple[Any, ...]] = set()
    for value, ftype in items:
        if type(value) is not dict:
            continue
        if ftype == "Range":
            low, high = value.get("low") or {}, value.get("high") or {}
            unit_of = low or high
            lo, hi = _decimal(low.get("value")), _decimal(high.get("value"))
            if lo is None and hi is None:
                continue
            out.add(
                (
                    _cut(unit_of.get("system")),
                    _cut(unit_of.get("code")),
                    _cut(unit_of.get("unit")),
                    lo if lo is not None else NUMBER_MIN,
                    hi if hi is not None else NUMBER_MAX,
                )
            )
        elif ftype == "Money" or "currency" in value:
            number = _decimal(value.get("value"))
            if number is not None:
                currency = _cut(value.get("currency"))
                out.add(("urn:iso:std:iso:4217", currency, currency, number, number))
        elif ftype in QUANTITY_TYPES or "value" in value:
            number = _decimal(value.get("value"))
            if number is not None:
                system, code, unit = (
                    _cut(value.get("system")),
                    _cut(value.get("code")),
                    _cut(value.get("unit")),
                )
                out.add((system, code, unit, number, number))
    return list(out)


def uri_values(items: list[Item]) -> list[tuple[Any, ...]]:
    """Return (uri,) for uri, url, canonical, oid, uuid and string values."""
    out: set[tuple[Any, ...]] = set()
    for value, ftype in items:
        if isinstance(value, str) and value and (ftype in _PRIMITIVE_TEXT or ftype == "dateTime"):
            out.add((clip(value, URI_BYTES),))
    return list(out)


CONVERTERS: dict[str, Converter] = {
    "string": string_values,
    "token": token_values,
    "date": date_values,
    "reference": reference_values,
    "number": number_values,
    "quantity": quantity_values,
    "uri": uri_values,
}
