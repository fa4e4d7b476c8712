"""Hypothesis strategies for request bodies: resources valid or wrong in one way, Bundles with odd entries,
Parameters for the bulk operations, truncated and deeply nested JSON, huge numbers, bytes that are not JSON.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import strategies as st

from tests.fuzz.strategies import IDS, TYPES, dates, numbers, raw_text

_REFERENCES = (
    "Patient/same",
    "same",
    "Patient/../same",
    "Patient/same/_history/2147483648",
    "http://bulkhead.test/Patient/same",
    "Foo/1",
    "",
)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(IDS),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _patient(rid: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01", **extra}
    if rid is not None:
        body["id"] = rid
    return body


@st.composite
def resources(draw: st.DrawFn, rid: str | None = None) -> dict[str, Any]:
    """Return a resource that may be valid, or wrong in one way (type, id, element, value)."""
    rtype = draw(st.sampled_from([*TYPES, "Foo", "", "patient"]))
    body: dict[str, Any] = {"resourceType": rtype}
    if draw(st.booleans()):
        body["id"] = draw(st.one_of(st.sampled_from(IDS), st.just(rid or "x"), raw_text))
    fields = {
        "birthDate": dates(),
        "gender": st.sampled_from(["female", "male", "robot", ""]),
        "active": st.one_of(st.booleans(), st.just("true"), st.none()),
        "name": st.just([{"family": "Fuzz", "given": ["A"]}]),
        "meta": st.one_of(
            st.just({"versionId": "2147483648"}), st.just({"lastUpdated": "9999-12-31T23:59:59Z"})
        ),
        "valueQuantity": numbers.map(lambda n: {"value": n}),
        "effectiveDateTime": dates(),
        "status": st.sampled_from(["final", "x"]),
        "code": st.just({"text": "fuzz"}),
        "x": json_values,
    }
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
        body[name] = draw(fields[name])
    return body


_ENTRY_URLS = (
    "Patient", "Patient/same", "Patient/same/_history/1", "Patient/same/_history/2147483648",
    "Patient/same/_history/%C2%B2", "Patient/same/_history/²", "Patient/same/_history/" + "9" * 5000,
    "Patient?birthdate=ap9999-12-31", "Patient?_count=" + "9" * 41, "Patient?_total=estimate&_id=a,b",
    "Patient?_count=%C2%B2", "Observation?value-quantity=1e999999999", "$export", "metadata", "Patient/../x",
    "http://bulkhead.test/Patient/same", "urn:uuid:x", "", "Foo/1", "Patient/" + "a" * 65,
)  # fmt: skip
_ENTRY_HEADERS = (
    ("ifMatch", ('W/"1"', 'W/"2147483648"', 'W/"' + "9" * 5000 + '"', 'W/"²"', "x")),
    ("ifNoneMatch", ('W/"1"', "*", 'W/"' + "9" * 5000 + '"', 'W/"²"')),
    ("ifModifiedSince", ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00")),
    ("ifNoneExist", ("_id=same", "birthdate=ap0001-01-01", "%", "_count=" + "9" * 5000)),
)
_VERBS = ("GET", "GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


def _bundle_entry(draw: st.DrawFn, well_formed: bool) -> Any:
    method = draw(st.sampled_from(_VERBS if well_formed else (*_VERBS, "", "get")))
    url = draw(st.one_of(*[st.sampled_from(_ENTRY_URLS)] * 4, raw_text))
    request: dict[str, Any] = {"method": method, "url": url}
    for name, values in _ENTRY_HEADERS:
        if draw(st.integers(0, 3)) == 0:
            request[name] = draw(st.sampled_from(values))
    entry: dict[str, Any] = {"request": request}
    if method in {"POST", "PUT"} or draw(st.integers(0, 5)) == 0:
        entry["resource"] = draw(resources())
    if draw(st.integers(0, 2)) == 0:
        entry["fullUrl"] = draw(st.sampled_from(["urn:uuid:x", "urn:uuid:", "http://x/Patient/1", ""]))
    return entry if well_formed or draw(st.integers(0, 4)) else draw(json_values)


@st.composite
def bundles(draw: st.DrawFn) -> dict[str, Any]:
    """Return a batch or transaction Bundle (most often well-formed, so that its entries are run) with odd
    entries, or a Bundle of another type."""
    well_formed = draw(st.integers(0, 4)) > 0
    kinds = ["transaction", "batch", "batch"] if well_formed else ["transaction", "batch", "collection", "x"]
    entries = [_bundle_entry(draw, well_formed) for _ in range(draw(st.integers(int(well_formed), 4)))]
    return {"resourceType": "Bundle", "type": draw(st.sampled_from(kinds)), "entry": entries}


_PARAMETER_NAMES = (
    "_type",
    "_since",
    "_until",
    "_typeFilter",
    "_elements",
    "patient",
    "_outputFormat",
    "includeAssociatedData",
    "inputFormat",
    "inputSource",
    "input",
    "storageDetail",
    "mode",
    "operation",
    "type",
    "x",
)


@st.composite
def parameters(draw: st.DrawFn) -> dict[str, Any]:
    """Return a Parameters body for $export, $import, $reindex or $bulk-update, with odd values."""
    params: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(_PARAMETER_NAMES))
        key = draw(
            st.sampled_from(
                ["valueString", "valueCode", "valueInstant", "valueInteger", "valueUri", "valueX"]
            )
        )
        value = draw(
            st.one_of(
                dates(),
                numbers,
                raw_text,
                st.sampled_from(["Patient", "Patient?birthdate=ap9999-12-31", "s3://x/y"]),
                st.sampled_from(
                    ["add", "replace", "delete", "Patient.active", "http://127.0.0.1:9/x.ndjson"]
                ),
                json_values,
            )
        )
        param: dict[str, Any] = {"name": name, key: value}
        if draw(st.integers(0, 3)) == 0:
            param = {
                "name": name,
                "part": [{"name": p, "valueString": draw(raw_text)} for p in ("type", "path", "url")],
            }
        if draw(st.integers(0, 4)) == 0:
            param = {"name": name, "valueReference": {"reference": draw(st.sampled_from(_REFERENCES))}}
        params.append(param)
    return {
        "resourceType": draw(st.sampled_from(["Parameters", "Parameters", "Patient", ""])),
        "parameter": params,
    }


def deep(levels: int, kind: str) -> bytes:
    """Return JSON nested ``levels`` deep (arrays, objects or extensions of a Patient)."""
    if kind == "array":
        return b"[" * levels + b"]" * levels
    if kind == "object":
        return b'{"a":' * levels + b"1" + b"}" * levels
    inner = b'{"url":"http://x","valueString":"a"}'
    for _ in range(levels):
        inner = b'{"url":"http://x","extension":[' + inner + b"]}"
    return b'{"resourceType":"Patient","extension":[' + inner + b"]}"


@st.composite
def serialized(draw: st.DrawFn, document: Any) -> bytes:
    """Return ``document`` as JSON bytes, or broken: truncated, nested deep, with huge numbers, not JSON."""
    text = json.dumps(document).encode()
    shape = draw(st.integers(0, 17))
    if shape == 0:
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if shape == 1:
        levels = draw(st.sampled_from([50, 200, 600, 3000]))
        return deep(levels, draw(st.sampled_from(["array", "object", "ext"])))
    if shape == 2:
        number = draw(st.sampled_from(_HUGE_NUMBERS))
        return b'{"resourceType":"Patient","id":"same","multipleBirthInteger":' + number.encode() + b"}"
    if shape == 3:
        return draw(st.binary(max_size=64))
    if shape == 4:
        return text.replace(b'"', b"'", 1)
    if shape == 5 and b": 1" in text:
        return text.replace(b": 1", b": " + draw(st.sampled_from(_HUGE_NUMBERS)).encode(), 1)
    return text


_HUGE_NUMBERS = ("1e999999", "-1e-999999", "9" * 5000, "1" + "0" * 4300, "1.5e308", "NaN", "-0", "1E400")


@st.composite
def bodies(draw: st.DrawFn, rid: str | None = None) -> bytes:
    """Return a body: a resource, Bundle or Parameters, truncated, deep, with huge numbers, or junk."""
    document = draw(st.one_of(resources(rid), bundles(), parameters(), fhirpath_patches(), json_values))
    return draw(serialized(document))


_PATCH_PATHS = (
    "Patient", "Patient.active", "Patient.name", "Patient.name[0]", "Patient.name[99999999999]",
    "Patient.birthDate", "Patient.id", "Patient.meta", "Patient.where(", "(", "Patient.name.given", "",
)  # fmt: skip
_PATCH_VALUES = st.one_of(
    st.booleans().map(lambda v: ("valueBoolean", v)),
    dates().map(lambda v: ("valueDate", v)),
    dates().map(lambda v: ("valueDateTime", v)),
    raw_text.map(lambda v: ("valueString", v)),
    st.integers(-(2**70), 2**70).map(lambda v: ("valueInteger", v)),
    json_values.map(lambda v: ("valueHumanName", v)),
)


@st.composite
def fhirpath_patches(draw: st.DrawFn) -> dict[str, Any]:
    """Return a FHIRPath Patch Parameters body whose operations are plausible or broken."""
    operations = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["add", "insert", "delete", "replace", "move", "x"]))
        parts: list[dict[str, Any]] = [
            {"name": "type", "valueCode": kind},
            {"name": "path", "valueString": draw(st.one_of(st.sampled_from(_PATCH_PATHS), raw_text))},
        ]
        if draw(st.booleans()):
            parts.append(
                {"name": "name", "valueString": draw(st.sampled_from(["active", "gender", "x", ""]))}
            )
        if draw(st.booleans()):
            key, value = draw(_PATCH_VALUES)
            parts.append({"name": "value", key: value})
        for name in ("index", "source", "destination"):
            if draw(st.integers(0, 3)) == 0:
                parts.append({"name": name, "valueInteger": draw(st.integers(-(2**40), 2**40))})
        operations.append({"name": draw(st.sampled_from(["operation", "operation", "x"])), "part": parts})
    return {"resourceType": "Parameters", "parameter": operations}


_JSON_PATCH_PATHS = (
    "/active",
    "/name/0",
    "/name/-",
    "/id",
    "/meta/versionId",
    "",
    "/",
    "~",
    "/name/99999999999",
)


@st.composite
def json_patches(draw: st.DrawFn) -> list[Any]:
    """Return a JSON Patch document (RFC 6902) with plausible or broken operations."""
    ops: list[Any] = []
    for _ in range(draw(st.integers(0, 3))):
        op: dict[str, Any] = {
            "op": draw(st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"])),
            "path": draw(st.one_of(st.sampled_from(_JSON_PATCH_PATHS), raw_text)),
        }
        if draw(st.booleans()):
            op["value"] = draw(json_values)
        if draw(st.integers(0, 3)) == 0:
            op["from"] = draw(st.sampled_from(_JSON_PATCH_PATHS))
        ops.append(op)
    return ops


_IMPORT_URLS = ("s3://fuzz-bucket/x.ndjson", "http://127.0.0.1:9/x.ndjson", "ftp://x/y", "", "x", "s3://")


@st.composite
def import_parameters(draw: st.DrawFn) -> dict[str, Any]:
    """Return an $import Parameters body: inputs of odd types and URLs, odd formats and storage."""
    input_format = draw(st.sampled_from(["application/fhir+ndjson", "text/csv", ""]))
    params: list[dict[str, Any]] = [
        {"name": "inputFormat", "valueCode": input_format},
        {"name": "inputSource", "valueUri": draw(st.sampled_from(["http://example.org", "", "x"]))},
    ]
    for _ in range(draw(st.integers(0, 3))):
        parts = [
            {"name": "type", "valueCode": draw(st.sampled_from([*TYPES, "Foo", ""]))},
            {"name": "url", "valueUrl": draw(st.one_of(st.sampled_from(_IMPORT_URLS), raw_text))},
        ]
        params.append({"name": "input", "part": parts})
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["https", "aws-s3", "ftp", ""]))
        params.append({"name": "storageDetail", "part": [{"name": "type", "valueCode": kind}]})
    return {"resourceType": "Parameters", "parameter": params}


_OPERATIONS = (
    ("POST", "/$export"), ("POST", "/Patient/$export"), ("POST", "/Group/g1/$export"), ("POST", "/$import"),
    ("POST", "/$reindex"), ("PATCH", "/$bulk-update"), ("PATCH", "/Patient/$bulk-update"),
    ("DELETE", "/$bulk-delete"), ("DELETE", "/Patient/$bulk-delete"), ("DELETE", "/Patient/$bulk-delete"),
)  # fmt: skip
_JSON_TYPES = ("application/fhir+json", "application/fhir+json", "application/json")


@st.composite
def writes(draw: st.DrawFn, base: str) -> tuple[str, str, str, bytes]:
    """Return (method, path below the host, Content-Type, body) of a write an attacker would send below
    ``base``: a Bundle, a resource create / update / patch, or a bulk operation's kick-off."""
    kind = draw(st.integers(0, 3))
    content_type = draw(st.sampled_from(_JSON_TYPES))
    rtype = draw(st.sampled_from(TYPES[:5]))
    rid = draw(st.one_of(*[st.sampled_from(IDS)] * 3, raw_text.filter(bool).map(lambda t: quote(t, safe=""))))
    if kind == 0:
        return "POST", base, content_type, draw(serialized(draw(bundles())))
    if kind == 1:
        method = draw(st.sampled_from(["PUT", "POST", "PATCH", "PATCH"]))
        if method == "PATCH":
            if draw(st.booleans()):
                return (
                    method,
                    f"{base}/{rtype}/{rid}",
                    content_type,
                    draw(serialized(draw(fhirpath_patches()))),
                )
            return (
                method,
                f"{base}/{rtype}/{rid}",
                "application/json-patch+json",
                draw(serialized(draw(json_patches()))),
            )
        path = f"{base}/{rtype}/{rid}" if method == "PUT" else f"{base}/{rtype}"
        return method, path, content_type, draw(serialized(draw(resources(unquote(rid)))))
    if kind == 2:
        method, path = draw(st.sampled_from(_OPERATIONS))
        if path.endswith("$import"):
            document: Any = draw(import_parameters())
        elif path.endswith("$bulk-update"):
            document = draw(fhirpath_patches())
        else:
            document = draw(parameters())
        body = b"" if method == "DELETE" else draw(serialized(document))
        return method, base + path, content_type, body
    method = draw(st.sampled_from(["PUT", "PATCH", "DELETE"]))
    criteria = draw(st.sampled_from(_CRITERIA))
    body = draw(serialized(draw(fhirpath_patches() if method == "PATCH" else resources())))
    return method, f"{base}/{rtype}?{criteria}", content_type, b"" if method == "DELETE" else body


_CRITERIA = (
    "_id=same", "identifier=urn:test|x", "birthdate=ap9999-12-31", "birthdate=ap0001-01-01", "name=FZ",
    "_lastUpdated=gt9999-12-31T23:59:59Z", "_id=a,b", "_count=%C2%B2", "_id=same&_total=estimate",
    "subject=Patient/same", "_has:Observation:subject:code=8867-4", "_format=json", "_id:missing=true",
)  # fmt: skip
