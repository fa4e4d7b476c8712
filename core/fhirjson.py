"""Parse FHIR JSON and write the stored form without losing what the client sent.

The stored text is the client's JSON with ``id`` and ``meta`` set by the server. Numbers keep the exact
spelling the client used (FHIR decimals carry their precision: ``1.50`` is not ``1.5``), which a plain
``loads``/``dumps`` round trip would lose.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from core.errors import InvalidRequest

# Numbers whose spelling orjson would change: trailing zeros after the point, exponents, big integers.
_LOSSY_NUMBER = re.compile(rb"\d\.\d*0(?![0-9])|\d[eE][-+]?\d|\d{16,}")
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def parse_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON body that must be an object, or raise InvalidRequest."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("The body must be a JSON object")
    return value


def _member_spans(text: str) -> list[tuple[str, str]]:
    """Return the top-level members of a JSON object as (key, raw value text) pairs."""
    idx = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[idx] != "{":
        raise InvalidRequest("The body must be a JSON object")
    idx = _WS.match(text, idx + 1).end()  # type: ignore[union-attr]
    members: list[tuple[str, str]] = []
    if text[idx] == "}":
        return members
    while True:
        key, idx = _DECODER.raw_decode(text, idx)
        idx = _WS.match(text, idx).end()  # type: ignore[union-attr]
        idx = _WS.match(text, idx + 1).end()  # type: ignore[union-attr]  # skip ':'
        start = idx
        _, idx = _DECODER.raw_decode(text, idx)
        members.append((key, text[start:idx]))
        idx = _WS.match(text, idx).end()  # type: ignore[union-attr]
        if text[idx] == "}":
            return members
        idx = _WS.match(text, idx + 1).end()  # type: ignore[union-attr]  # skip ','


def dump_with(raw: bytes, resource: dict[str, Any], **top: Any) -> bytes:
    """Return ``raw`` re-written with the top-level members in ``top`` set (``None`` removes one).

    ``resource`` is ``raw`` already parsed. ``resourceType`` stays first, the given members follow it, and
    every other member keeps the client's bytes.
    """
    if not _LOSSY_NUMBER.search(raw):
        out: dict[str, Any] = {"resourceType": resource.get("resourceType")}
        for key, value in top.items():
            if value is not None:
                out[key] = value
        for key, value in resource.items():
            if key not in out and key not in top:
                out[key] = value
        return orjson.dumps(out)
    parts = [b'"resourceType":' + orjson.dumps(resource.get("resourceType"))]
    for key, value in top.items():
        if value is not None:
            parts.append(orjson.dumps(key) + b":" + orjson.dumps(value))
    for key, text in _member_spans(raw.decode("utf-8")):
        if key == "resourceType" or key in top:
            continue
        parts.append(orjson.dumps(key) + b":" + " ".join(text.split("\n")).encode("utf-8"))
    return b"{" + b",".join(parts) + b"}"


def dumps(value: Any) -> bytes:
    """Serialise a server-built value (Bundle, OperationOutcome) to JSON bytes."""
    return orjson.dumps(value)
