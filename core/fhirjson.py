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
# Numbers of 16 characters or more (digits and a point) may hold more digits than a double keeps.
_LONG_NUMBER = re.compile(rb"(?<![\w.])-?\d[\d.]{15,}(?:[eE][-+]?\d+)?")
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


def _lossy(raw: bytes) -> bool:
    """Return True when a plain re-serialisation would spell a number of ``raw`` differently."""
    if _LOSSY_NUMBER.search(raw):
        return True
    for match in _LONG_NUMBER.finditer(raw):
        token = match.group()
        try:
            if orjson.dumps(orjson.loads(token)) != token:
                return True
        except orjson.JSONDecodeError:
            continue
    return False


def dump_with(raw: bytes, resource: dict[str, Any], **top: Any) -> bytes:
    """Return ``raw`` re-written with the top-level members in ``top`` set (``None`` removes one).

    ``resource`` is ``raw`` already parsed. ``resourceType`` stays first, the given members follow it, and
    every other member keeps the client's bytes.
    """
    if not _lossy(raw):
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


def _exact(raw: bytes) -> Any:
    """Parse ``raw`` keeping every number's spelling (``1.50`` and ``1.5`` differ, as FHIR decimals do)."""
    return json.loads(raw, parse_float=lambda text: ("decimal", text), parse_int=lambda text: ("int", text))


def _content(value: Any) -> Any:
    """Return a parsed resource without what the server sets on each version (id, versionId, lastUpdated).

    The id is the URL's, checked before this comparison (a conditional update's body may leave it out)."""
    if not isinstance(value, dict):
        return value
    meta = {k: v for k, v in (value.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in value.items() if k not in ("meta", "id")}
    if meta:
        out["meta"] = meta
    return out


def same_content(stored: bytes, sent: bytes) -> bool:
    """Return True when ``sent`` says exactly what ``stored`` says, apart from the version's own meta."""
    try:
        return bool(_content(_exact(stored)) == _content(_exact(sent)))
    except ValueError:
        return False


def dumps(value: Any) -> bytes:
    """Serialise a server-built value (Bundle, OperationOutcome) to JSON bytes."""
    return orjson.dumps(value)


_OPEN, _CLOSE = b"{[", b"}]"


def pretty(raw: bytes, indent: int = 2) -> bytes:
    """Return JSON ``raw`` indented for people, changing nothing but white space outside strings (numbers
    keep their spelling, which a parse and re-serialisation would not promise)."""
    out = bytearray()
    depth = 0
    in_string = escaped = False
    data = raw.strip()
    for pos, byte in enumerate(data):
        char = bytes((byte,))
        if in_string:
            out += char
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                in_string = False
        elif char in b" \t\r\n":
            continue
        elif char == b'"':
            in_string = True
            out += char
        elif char in _OPEN:
            out += char
            following = data[pos + 1 :].lstrip()[:1]
            if following and following in _CLOSE:
                continue
            depth += 1
            out += b"\n" + b" " * (indent * depth)
        elif char in _CLOSE:
            if bytes(out[-1:]) not in (b"{", b"["):
                depth -= 1
                out += b"\n" + b" " * (indent * depth)
            out += char
        elif char == b",":
            out += b",\n" + b" " * (indent * depth)
        elif char == b":":
            out += b": "
        else:
            out += char
    return bytes(out)
