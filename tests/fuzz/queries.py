"""Hypothesis strategies for query strings and headers: every parameter type's prefixes and modifiers,
chains, ``_has``, result parameters (``_include``, ``_sort``, ``_count``, ``_total``, forged ``_cursor``s),
and the headers clients send (Accept, Prefer, conditional headers, X-Forwarded-*).
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.strategies import TYPES, big_ints, dates, numbers, raw_text

_PARAMS = (
    "name",
    "family",
    "given",
    "address-city",
    "gender",
    "identifier",
    "active",
    "code",
    "status",
    "_id",
    "telecom",
    "_tag",
    "_security",
    "_profile",
    "_source",
    "url",
    "birthdate",
    "date",
    "_lastUpdated",
    "death-date",
    "onset-date",
    "subject",
    "patient",
    "general-practitioner",
    "organization",
    "member",
    "value-quantity",
    "probability",
    "value-concept",
    "subject:Patient.name",
    "subject.name",
    "patient.organization.name",
    "general-practitioner:Practitioner.name",
    "_has:Observation:subject:code",
    "_has:Observation:patient:_has:Condition:subject:code",
    "_has:Observation:subject",
    "_has",
    "_text",
    "_content",
    "_list",
    "_query",
    "_filter",
    "near",
    "_type",
    "nope",
    "_",
    ":",
    "",
)
_MODIFIERS = (
    "",
    "",
    "",
    ":exact",
    ":contains",
    ":missing",
    ":not",
    ":text",
    ":below",
    ":above",
    ":in",
    ":not-in",
    ":of-type",
    ":identifier",
    ":Patient",
    ":Observation",
    ":iterate",
    ":",
    "::",
    ":Foo",
)
PREFIXES = ("", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "g", "gte")


def _cursor(values: list[Any], direction: str = "n") -> str:
    raw = json.dumps([direction, values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


cursor_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=10),
    st.sampled_from(
        [
            "1" * 5000,
            "1e999999999",
            "-1e-999999999",
            "NaN",
            "Infinity",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "2024-01-01T00:00:00",
            "\ud800",
            "x\x00y",
            "99999999999999999999999",
        ]
    ),
)
# Cursors shaped like real ones (the default order's surrogate id; _id or _lastUpdated and the id; a sort
# key's missing-flag, value and the id), holding values no row could have, and cursors that are no cursor.
_CURSOR_SHAPES = st.one_of(
    st.tuples(cursor_values).map(list),
    st.tuples(cursor_values, cursor_values).map(list),
    st.tuples(st.booleans(), cursor_values, cursor_values).map(list),
    st.lists(cursor_values, max_size=6),
)
cursors = st.one_of(
    _CURSOR_SHAPES.flatmap(lambda values: st.sampled_from(["n", "p", "x"]).map(lambda d: _cursor(values, d))),
    st.text("ABCDEFabcdef0123456789-_=", max_size=40),
    raw_text,
)
_REFERENCES = (
    "Patient/same",
    "same",
    "Patient/../same",
    "Patient/same/_history/1",
    "Patient/same/_history/2147483648",
    "http://bulkhead.test/Patient/same",
    "urn:uuid:1",
    "Foo/1",
    "Patient/",
    "/Patient/same",
    "Patient/a b",
)


_PREFIXED = st.tuples(st.sampled_from(PREFIXES), st.one_of(dates(), numbers)).map("".join)
_TOKENS = st.tuples(raw_text, st.sampled_from(["|", "", "\\|", "||"]), raw_text).map("".join)
_VALUE = st.one_of(
    _PREFIXED,
    _PREFIXED,
    _TOKENS,
    raw_text,
    st.sampled_from(_REFERENCES),
    st.sampled_from(["true", "false", "*"]),
)


@lru_cache
def _values(name: str) -> st.SearchStrategy[str]:
    value = _VALUE
    if name == "_count" or name == "_offset":
        return big_ints
    if name == "_total":
        return st.sampled_from(["none", "estimate", "accurate", "", "ESTIMATE", "x"])
    if name == "_summary":
        return st.sampled_from(["true", "false", "text", "data", "count", "", "x"])
    if name == "_cursor":
        return cursors
    if name in {"_include", "_revinclude", "_include:iterate", "_revinclude:iterate"}:
        include = st.tuples(
            st.sampled_from((*TYPES, "Foo", "*", "")),
            st.sampled_from(["subject", "patient", "general-practitioner", "member", "*", "name", "", "x"]),
            st.sampled_from(["", ":Patient", ":Foo", ":", ":Organization"]),
        ).map(lambda t: f"{t[0]}:{t[1]}{t[2]}")
        return st.one_of(include, st.just("*"), raw_text)
    if name == "_sort":
        key = st.tuples(st.sampled_from(["", "-", "--"]), st.sampled_from(_PARAMS)).map("".join)
        return st.lists(key, min_size=1, max_size=4).map(",".join)
    if name == "_elements":
        return st.lists(
            st.sampled_from(["id", "name", "birthDate", "meta", "Patient.name", "x", ""]), max_size=4
        ).map(",".join)
    return st.one_of(value, st.lists(value, min_size=2, max_size=4).map(",".join))


_RESULTS = (
    "_include",
    "_revinclude",
    "_include:iterate",
    "_revinclude:iterate",
    "_sort",
    "_count",
    "_offset",
    "_total",
    "_summary",
    "_elements",
    "_cursor",
    "_format",
    "_pretty",
    "_contained",
    "_since",
    "_at",
    "_until",
    "_outputFormat",
    "_typeFilter",
    "_hardDelete",
    "_purgeHistory",
    "kind",
    "status",
)


@st.composite
def search_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Return (name, value) pairs of a query: search parameters with modifiers and result parameters."""
    pairs = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(_RESULTS))
            value = draw(
                st.one_of(_values(name), dates()) if name in {"_since", "_at", "_until"} else _values(name)
            )
        else:
            name = draw(st.sampled_from(_PARAMS)) + draw(st.sampled_from(_MODIFIERS))
            value = draw(_values(name))
        pairs.append((name, value))
    return pairs


def query_string(pairs: list[tuple[str, str]]) -> str:
    """Percent-encode pairs into a query string (``:`` kept in names, as clients send modifiers)."""
    return "&".join(f"{quote(n, safe=':._-*')}={quote(v, safe=':|,._-*/')}" for n, v in pairs)


raw_queries = st.sampled_from(["%", "%ZZ", "a=%", "&&=&", "=x", "a=b=c", "%00=1", "_count", "x=%ED%A0%80"])


# -- headers -------------------------------------------------------------------------------------------

_HEADER_VALUES = {
    "Accept": [
        "application/fhir+json",
        "application/json",
        "*/*",
        "application/fhir+xml",
        "text/html",
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json; fhirVersion=3.0",
        "application/*;q=0",
        "application/fhir+json;q=0, */*;q=0",
        ";;;",
        "application/fhir+ndjson",
    ],
    "Prefer": [
        "respond-async",
        "return=minimal",
        "return=representation",
        "return=OperationOutcome",
        "handling=lenient",
        "handling=strict",
        "respond-async, handling=lenient",
        "return=",
        "=",
        ";;,,",
    ],
    "If-Match": [
        'W/"1"',
        'W/"0"',
        '"2"',
        'W/"2147483648"',
        'W/"' + "9" * 5000 + '"',
        "*",
        "W/",
        'W/"²"',
        "x",
    ],
    "If-None-Match": ['W/"1"', "*", 'W/"2147483648"', 'W/"' + "9" * 50 + '"', "x"],
    "If-Modified-Since": ["Sat, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "yesterday", ""],
    "If-None-Exist": ["identifier=x|y", "_id=same", "birthdate=ap9999-12-31", "_count=%C2%B2", "", "%", "a"],
    "X-Forwarded-For": ["127.0.0.1", "::1", "a, b, c", "999.999.999.999", ""],
    "X-Forwarded-Proto": ["https", "http", "gopher", "", "https, http"],
    "X-Forwarded-Host": ["fhir.example.org", "example.org:99999", "a b", "évil.example", "", "[::1]", "x/y"],
    "X-Forwarded-Port": ["443", "99999", "-1", "x", ""],
    "X-Tenant-ID": ["default", "ADMIN", "..", "", "x;y"],
    "Accept-Encoding": ["gzip", "gzip;q=0", "*", "br", "identity;q=0, *;q=0"],
    "X-Request-ID": ["1", "x" * 300],
}


_GARBAGE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_HEADERS = {name: st.one_of(st.sampled_from(values), _GARBAGE) for name, values in _HEADER_VALUES.items()}
_HEADER_NAMES = st.lists(st.sampled_from(sorted(_HEADER_VALUES)), max_size=4, unique=True)


@st.composite
def headers(draw: st.DrawFn, names: tuple[str, ...] = ()) -> dict[str, str]:
    """Return a few request headers (of ``names``, or of every kind), each a known value or garbage."""
    chosen = (
        draw(_HEADER_NAMES) if not names else draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    )
    return {name: draw(_HEADERS[name]) for name in chosen}


CONTENT_TYPES = (
    "application/fhir+json",
    "application/fhir+json",
    "application/json",
    "application/fhir+json; fhirVersion=4.0",
    "application/fhir+json; charset=latin-1",
    "application/json-patch+json",
    "application/x-www-form-urlencoded",
    "application/fhir+xml",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
    ";",
    "application/fhir+json;;",
)
