"""Hypothesis strategies for requests an attacker would send: paths, search parameters, headers and bodies.

Each strategy mixes values that are valid (so that requests get past the first check and reach deeper code)
with the edges and garbage that broke parsers before: control characters, percent-encoding, dot segments,
overlong segments, integers beyond their columns, dates at the ends of the calendar, numbers with huge
exponents, forged cursors, truncated and deeply nested JSON.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

from hypothesis import strategies as st

TYPES = ("Patient", "Observation", "Condition", "Group", "Encounter", "Organization", "Bundle", "Parameters")
BAD_TYPES = ("patient", "Foo", "PATIENT", "P", "A" * 70, "Pati%00ent", "Pati%C3%A9nt", "Patient%20")
KINDS = ("export", "import", "reindex", "bulk-update", "bulk-delete", "nope", "EXPORT", "%00", "..")
IDS = ("same", "obs", "c1", "g1", "gone", "edge", "nobody", "p1")

# Mostly printable text (so that a request gets past the first check), sometimes any unicode, sometimes
# control characters and the characters URLs treat specially.
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=16)
raw_text = st.one_of(
    *[printable] * 6,
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.text(st.sampled_from("\x00\x01\x1f\x7f%/?#&=+;,|\\:$*. \t\nab"), max_size=8),
)
encoded_text = raw_text.map(lambda text: quote(text, safe=""))
odd_segments = st.sampled_from(
    [
        "..",
        ".",
        "%2e%2e",
        "%2E",
        "%2F",
        "%5C",
        "a%00b",
        "%00",
        "%01",
        "%7F",
        "%FF",
        "%C0%AE",
        "%E2%80%AE",
        "%ED%A0%80",
        "%",
        "%ZZ",
        "$everything",
        "$meta",
        "_history",
        "_search",
        "$export",
        "*",
        "~",
        "",
    ]
)
long_segments = st.integers(1, 6000).map(lambda n: "a" * n)
segments = st.one_of(st.sampled_from(IDS), odd_segments, encoded_text, long_segments)
big_ints = st.one_of(
    st.integers(-(10**30), 10**60).map(str),
    st.sampled_from(
        [
            "2147483647",
            "2147483648",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "0",
            "00",
            "-1",
            "1.0",
            "1e3",
            "+1",
            " 1",
            "%C2%B2",
            "%D9%A3",
            "x",
            "9" * 41,
            "9" * 5000,
            "1" + "0" * 4300,
        ]
    ),
)
job_ids = st.one_of(
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.text("0123456789abcdef", min_size=32, max_size=32).map(lambda h: h + "%00"),
    st.text("0123456789ABCDEF", min_size=32, max_size=32),
    st.text("0123456789abcdef", min_size=0, max_size=80),
    segments,
)


_TYPES = st.one_of(st.sampled_from(TYPES), st.sampled_from(TYPES), st.sampled_from(BAD_TYPES))
_ODD_PARTITIONS = st.sampled_from(
    ["", ".", "..", "ADMIN", "system", "%00", "a%00", "caf%C3%A9", "a" * 65, "a%2Fb", "x;y", "%20"]
)


@lru_cache
def _partition_prefix(partitions: tuple[str, ...]) -> st.SearchStrategy[str]:
    mine = st.sampled_from([f"/partitions/{p}" for p in partitions])
    return st.one_of(
        mine,
        mine,
        mine,
        mine,
        mine,
        _ODD_PARTITIONS.map(lambda name: f"/partitions/{name}"),
        encoded_text.map(lambda name: f"/partitions/{name}"),
        st.just(""),
    )


_TEMPLATES = (
    "/{t}",
    "/{t}/{i}",
    "/{t}/{i}/_history",
    "/{t}/{i}/_history/{v}",
    "/{t}/_history",
    "/_history",
    "/{t}/_search",
    "/",
    "/metadata",
    "/$export",
    "/Patient/$export",
    "/Group/{i}/$export",
    "/_operations",
    "/_operations/{k}/{j}",
    "/_operations/{k}/{j}/{s}",
    "/{t}/$bulk-update",
    "/$bulk-delete",
    "/$import",
    "/$reindex",
    "/{t}/{i}/{s}",
    "/{s}",
    "/{s}/{s}/{s}",
    "/{t}/{i}/_history/{v}/{s}",
    "/_partition-config",
)
_SYSTEM = (
    "/partitions",
    "/_partition-config",
    "/_partition-config/{s}",
    "/_audit",
    "/metrics",
    "/_reindex",
    "/.well-known/smart-configuration",
    "//Patient",
    "/partitions/",
    "/{s}",
)


_PLACEHOLDERS = {
    "t": _TYPES,
    "i": st.one_of(st.sampled_from(IDS), st.sampled_from(IDS), segments),
    "v": big_ints,
    "k": st.sampled_from(KINDS),
    "j": job_ids,
    "s": segments,
}


@st.composite
def paths(draw: st.DrawFn, partitions: tuple[str, ...]) -> str:
    """Return a path: a FHIR or job URL under a partition base (sometimes an odd one), or a system one."""
    system = draw(st.integers(0, 19)) == 0
    template = draw(st.sampled_from(_SYSTEM if system else _TEMPLATES))
    values = {key: draw(strategy) for key, strategy in _PLACEHOLDERS.items() if "{" + key + "}" in template}
    path = template.format(**values)
    return path if system else draw(_partition_prefix(partitions)) + path


_YEARS = st.one_of(
    st.sampled_from(["0000", "0001", "0002", "1970", "2024", "9998", "9999"]),
    st.integers(0, 9999).map(lambda y: f"{y:04d}"),
    st.sampled_from(["10000", "-001", "99", "2O24"]),
)
_MONTHS = st.one_of(st.sampled_from([1, 12, 0, 13]), st.integers(0, 13)).map(lambda m: f"-{m:02d}")
_DAYS = st.one_of(st.sampled_from([1, 28, 29, 30, 31, 0, 32]), st.integers(0, 32)).map(lambda d: f"-{d:02d}")
_CLOCK = st.tuples(st.integers(0, 25), st.integers(0, 61)).map(lambda t: f"T{t[0]:02d}:{t[1]:02d}")
_SECONDS = st.integers(0, 61).map(lambda s: f":{s:02d}")
_FRACTIONS = st.text("0123456789", min_size=1, max_size=12).map(lambda f: "." + f)
_ZONES = st.one_of(
    st.sampled_from(["Z", "+00:00", "-00:00", "+14:00", "-12:00", "+23:59", "-23:59", "+24:00", "", "z"]),
    st.tuples(st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)).map(
        lambda z: f"{z[0]}{z[1]:02d}:{z[2]:02d}"
    ),
)


@st.composite
def dates(draw: st.DrawFn) -> str:
    """Return a FHIR date, dateTime or instant (or a near miss), often at the ends of the calendar."""
    text = draw(_YEARS)
    precision = draw(st.integers(0, 5))
    if precision >= 1:
        text += draw(_MONTHS)
    if precision >= 2:
        text += draw(_DAYS)
    if precision >= 3:
        text += draw(_CLOCK)
    if precision >= 4:
        text += draw(_SECONDS)
    if precision >= 5:
        text += draw(st.one_of(st.just(""), _FRACTIONS))
    return text + (draw(_ZONES) if precision >= 3 else "")


numbers = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**50), 10**50).map(str),
    st.floats().map(repr),
    st.sampled_from(
        [
            "1e999999999",
            "-1e-999999999",
            "1e400",
            "1E-400",
            "NaN",
            "Infinity",
            "-0",
            ".5",
            "5.",
            "1_000",
            "0x10",
            "1e",
            "e5",
            "١٢",
            "9" * 400,
            "0." + "0" * 500 + "1",
            "1e+21",
            "-1e21",
            "1e22",
        ]
    ),
)
