"""Batch and transaction Bundles: read the entries, their targets and their resources' bytes.

Nothing here talks HTTP or to the database. A resource inside an entry keeps the client's bytes (decimal
precision survives): the entry's ``resource`` is cut out of the request body as text, and references are
rewritten in that text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from core.errors import BulkheadError, InvalidRequest, Issue, NotFound, PayloadTooLarge, PreconditionFailed
from core.fhirtypes import require_type
from core.partition import DEFAULT_PARTITION
from core.urlvalues import etag_digits, etag_version, version_number
from core.validation import ID_PATTERN, structural_issues, without_nested
from services.patching import Patch, patch_from_entry
from storage.search import SearchQuery

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# Processing order of a transaction (FHIR R4 3.1.0.11.2): DELETE, POST, PUT/PATCH, then GET/HEAD.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_REFERENCE = re.compile(rb'("reference"[ \t\n\r]*:[ \t\n\r]*")((?:[^"\\]|\\.)*)(")')
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class Entry:
    """One entry of a batch or transaction, with its target resolved against the partition's base."""

    index: int
    method: str
    url: str
    rtype: str | None = None
    rid: str | None = None
    vid: str | None = None
    query: str | None = None
    full_url: str | None = None
    raw: bytes | None = None
    resource: dict[str, Any] | None = None
    if_match: int | None = None
    if_none_exist: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    problem: BulkheadError | None = None
    references: list[str] = field(default_factory=list)
    conditional: bool = False
    patch: Patch | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    search: SearchQuery | None = None
    condition: SearchQuery | None = None

    @property
    def label(self) -> str:
        """Name the entry in messages: ``Bundle.entry[3] (PUT Patient/1)``."""
        return f"Bundle.entry[{self.index}] ({self.method} {self.url})"

    @property
    def target(self) -> str | None:
        """Return ``Type/id`` of the resource the entry writes, once known."""
        return f"{self.rtype}/{self.rid}" if self.rtype and self.rid else None


@dataclass(frozen=True)
class Bases:
    """How the partition's base and the server's other partitions are spelled in absolute URLs."""

    partition: str
    roots: tuple[str, ...]

    def resolve(self, url: str) -> str:
        """Return ``url`` relative to the partition's base; refuse another partition's or server's URL."""
        if not _ABSOLUTE.match(url):
            return url.lstrip("/")
        for root in self.roots:
            if not url.startswith(root + "/") and url != root:
                continue
            rest = url[len(root) :].lstrip("/")
            if rest.startswith("partitions/"):
                name, _, below = rest[len("partitions/") :].partition("/")
                if unquote(name) != self.partition:
                    raise InvalidRequest(
                        f"{url} belongs to another partition; cross-partition requests are not supported"
                    )
                return below
            if self.partition != DEFAULT_PARTITION:
                raise InvalidRequest(
                    f"{url} belongs to the partition {DEFAULT_PARTITION!r}; "
                    "cross-partition requests are not supported"
                )
            return rest
        raise InvalidRequest(f"{url} is not on this server's base; only this partition's URLs are accepted")

    def foreign(self, reference: str) -> bool:
        """Return whether an absolute reference points into another partition of this server."""
        if not _ABSOLUTE.match(reference):
            return False
        try:
            self.resolve(reference)
        except InvalidRequest as exc:
            return "cross-partition" in exc.message
        return False


def is_absolute(url: str) -> bool:
    """Return whether ``url`` starts with a scheme (``http://...``) rather than a path."""
    return _ABSOLUTE.match(url) is not None


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    assert m is not None
    return m.end()


def _members(text: str, i: int) -> dict[str, tuple[int, int]]:
    """Return the members of the JSON object starting at ``i`` as key -> (start, end) of its value."""
    i = _ws(text, i)
    out: dict[str, tuple[int, int]] = {}
    if text[i] != "{":
        return out
    i = _ws(text, i + 1)
    if text[i] == "}":
        return out
    while True:
        key, i = _DECODER.raw_decode(text, i)
        i = _ws(text, _ws(text, i) + 1)
        _, end = _DECODER.raw_decode(text, i)
        out[key] = (i, end)
        i = _ws(text, end)
        if text[i] == "}":
            return out
        i = _ws(text, i + 1)


def _items(text: str, i: int) -> list[tuple[int, int]]:
    """Return the (start, end) of each item of the JSON array starting at ``i``."""
    i = _ws(text, i)
    out: list[tuple[int, int]] = []
    if text[i] != "[":
        return out
    i = _ws(text, i + 1)
    if text[i] == "]":
        return out
    while True:
        _, end = _DECODER.raw_decode(text, i)
        out.append((i, end))
        i = _ws(text, end)
        if text[i] == "]":
            return out
        i = _ws(text, i + 1)


def resource_bytes(raw: bytes, count: int) -> list[bytes | None]:
    """Return the client's bytes of each entry's ``resource`` of a Bundle body (None where absent)."""
    text = raw.decode("utf-8")
    out: list[bytes | None] = [None] * count
    try:
        spans = _members(text, 0)
        if "entry" not in spans:
            return out
        for n, (start, _end) in enumerate(_items(text, spans["entry"][0])[:count]):
            member = _members(text, start).get("resource")
            if member is not None:
                out[n] = text[member[0] : member[1]].encode("utf-8")
    except RecursionError:
        raise InvalidRequest("The Bundle is nested too deeply") from None
    return out


def _version(value: Any, what: str) -> int | None:
    if value is None:
        return None
    digits = etag_digits(str(value))
    if digits is None:
        raise InvalidRequest(f'{what} {str(value)[:80]!r} is not a version ETag such as W/"1"')
    version = version_number(digits)
    if version is None:
        raise PreconditionFailed(f"{what} names version {digits[:40]}, which no resource has")
    return version


def _target(entry: Entry, bases: Bases) -> None:
    """Read the entry's url once: its target (type, id, version) and its query as (name, value) pairs.

    Everything after the first ``?`` is the query, parsed here and nowhere else; a fragment (``#``) has no
    meaning in a request and is refused.
    """
    if "#" in entry.url:
        raise InvalidRequest(f"The request url {entry.url!r} carries a fragment ('#'); send it without one")
    path, _, query = bases.resolve(entry.url).partition("?")
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    entry.query = query or None
    entry.pairs = parse_qsl(query, keep_blank_values=True)
    if not parts:
        raise InvalidRequest("The request url names no resource type")
    if parts[0].startswith("$") or parts[0] in {"metadata", "_history", "_search"}:
        raise InvalidRequest(f"{parts[0]} is not supported inside a batch or transaction")
    entry.rtype = require_type(parts[0])
    if len(parts) >= 2:
        if not ID_PATTERN.fullmatch(parts[1]):
            raise InvalidRequest(f"Invalid resource id {parts[1]!r} in the request url")
        entry.rid = parts[1]
    if len(parts) == 4 and parts[2] == "_history":
        version = version_number(parts[3])
        if version is None:
            raise NotFound(f"{entry.rtype}/{entry.rid} has no version {parts[3][:40]!r}")
        entry.vid = str(version)
    elif len(parts) > 2:
        raise InvalidRequest(f"{entry.url} is not an interaction supported inside a batch or transaction")
    if entry.method == "POST" and (entry.rid is not None or entry.query):
        raise InvalidRequest("POST entries create: their url is the resource type only")
    if entry.method in {"PUT", "DELETE", "PATCH"}:
        if entry.vid is not None or (entry.rid is not None and entry.query):
            raise InvalidRequest(f"{entry.method} entries take the url Type/id or Type?criteria")
        if entry.rid is None and not entry.query:
            raise InvalidRequest(
                f"{entry.method} entries need an id (Type/id) or search criteria (Type?criteria)"
            )
        entry.conditional = entry.rid is None


def _entry(index: int, item: Any, raw: bytes | None, bases: Bases) -> Entry:
    request = item.get("request") if isinstance(item, dict) else None
    if not isinstance(request, dict):
        return Entry(index, "?", "?", problem=InvalidRequest("The entry has no request"))
    method, url = request.get("method"), request.get("url")
    if method not in METHODS or not isinstance(url, str) or not url:
        return Entry(
            index,
            str(method),
            str(url),
            problem=InvalidRequest("The entry's request needs a method (GET, POST, PUT, ...) and a url"),
        )
    entry = Entry(index, method, url, full_url=item.get("fullUrl"))
    try:
        _target(entry, bases)
        entry.if_match = _version(request.get("ifMatch"), "ifMatch")
        entry.if_none_exist = request.get("ifNoneExist")
        entry.if_none_match = request.get("ifNoneMatch")
        entry.if_modified_since = request.get("ifModifiedSince")
        resource = item.get("resource")
        if method in {"POST", "PUT"}:
            if not isinstance(resource, dict) or raw is None:
                raise InvalidRequest(f"A {method} entry needs a resource")
            entry.raw, entry.resource = raw, resource
        elif method == "PATCH":
            entry.patch = patch_from_entry(resource)
            if (
                isinstance(resource, dict)
                and resource.get("resourceType") == "Parameters"
                and raw is not None
            ):
                entry.raw, entry.resource = raw, resource  # its references are resolved like a resource's
    except BulkheadError as exc:
        entry.problem = exc
    return entry


def read_bundle(
    raw: bytes, bundle: dict[str, Any], bases: Bases, max_entries: int
) -> tuple[str, list[Entry]]:
    """Return the Bundle's type and its entries; refuse what is not a batch or transaction."""
    if bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base takes a Bundle of type batch or transaction")
    kind = bundle.get("type")
    if kind not in {"batch", "transaction"}:
        raise InvalidRequest(f"POST to the base takes a batch or transaction Bundle, not {kind!r}")
    items = bundle.get("entry", [])
    if not isinstance(items, list):
        raise InvalidRequest("Bundle.entry must be an array")
    if len(items) > max_entries:
        raise PayloadTooLarge(
            f"The Bundle has {len(items)} entries; at most {max_entries} are accepted in one request"
        )
    issues = structural_issues(without_nested(bundle))
    if issues:
        raise InvalidRequest("The Bundle is malformed", issues=issues)
    raws = resource_bytes(raw, len(items))
    return kind, [_entry(i, item, raws[i], bases) for i, item in enumerate(items)]


def references(raw: bytes) -> list[str]:
    """Return every ``reference`` string in a resource's bytes."""
    return [orjson.loads(b'"' + m.group(2) + b'"') for m in _REFERENCE.finditer(raw)]


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_LINK = re.compile(r"""\b(href|src)(\s*=\s*)(["'])(.*?)\3""", re.IGNORECASE | re.DOTALL)


# Strings that may spell a fullUrl without linking to the entry: an Identifier's or ContactPoint's value.
_NOT_LINKS = frozenset({b"value"})


def _member_name(raw: bytes, start: int) -> bytes | None:
    """Return the member name a JSON string value at ``start`` belongs to (None for an array item)."""
    before = raw[:start].rstrip()
    if not before.endswith(b":"):
        return None
    key_end = before[:-1].rstrip()
    key_start = key_end.rfind(b'"', 0, len(key_end) - 1)
    return key_end[key_start + 1 : -1] if key_start >= 0 else None


def _rewrite_links(raw: bytes, urls: dict[str, str]) -> bytes:
    """Replace every JSON string that is one of ``urls`` (uri, url, oid and uuid elements) and every
    ``href``/``src`` naming one in a narrative's XHTML."""

    def swap_link(m: re.Match[str]) -> str:
        target = urls.get(m.group(4))
        return m.group(0) if target is None else f"{m.group(1)}{m.group(2)}{m.group(3)}{target}{m.group(3)}"

    def swap(m: re.Match[bytes]) -> bytes:
        value = orjson.loads(m.group(0))
        target = urls.get(value)
        if target is not None:
            return m.group(0) if _member_name(raw, m.start()) in _NOT_LINKS else orjson.dumps(target)
        if "<" in value and ("href" in value or "src" in value):
            changed = _LINK.sub(swap_link, value)
            if changed != value:
                return orjson.dumps(changed)
        return m.group(0)

    return _STRING.sub(swap, raw)


def rewrite_references(raw: bytes, mapping: dict[str, str]) -> bytes:
    """Return ``raw`` with each fullUrl of ``mapping`` replaced by the ``Type/id`` it was stored under.

    References (``"reference": ...``) take every key of ``mapping``. Any other string equal to a fullUrl
    that is a URL or a ``urn:`` placeholder (elements of type uri, url, oid, uuid), and ``<a href>`` and
    ``<img src>`` in narrative naming one, are rewritten too, as R4's transaction rules ask."""
    if not mapping:
        return raw

    def swap(m: re.Match[bytes]) -> bytes:
        value = orjson.loads(b'"' + m.group(2) + b'"')
        target = mapping.get(value)
        if target is None:
            return m.group(0)
        return m.group(1) + orjson.dumps(target)[1:-1] + m.group(3)

    raw = _REFERENCE.sub(swap, raw)
    urls = {key: target for key, target in mapping.items() if ":" in key and key.encode() in raw}
    return _rewrite_links(raw, urls) if urls else raw


def refuse_foreign_references(raw: bytes, bases: Bases) -> None:
    """Refuse a resource whose references point into another partition of this server."""
    for ref in references(raw):
        if bases.foreign(ref):
            raise InvalidRequest(
                f"The reference {ref!r} points into another partition; "
                "cross-partition references are not supported"
            )


def check_references(entry: Entry, bases: Bases) -> None:
    """Refuse references to other partitions and placeholders (urn:uuid, urn:oid) nothing resolved."""
    if entry.raw is None:
        return
    for ref in references(entry.raw):
        if ref.startswith(("urn:uuid:", "urn:oid:")):
            raise InvalidRequest(
                f"The reference {ref!r} matches no entry's fullUrl in this transaction "
                "(a batch never resolves references between its entries)",
                issues=[Issue(f"Unresolved reference {ref!r}", code="not-found")],
            )
    refuse_foreign_references(entry.raw, bases)


__all__ = [
    "ORDER",
    "Bases",
    "Entry",
    "check_references",
    "etag_version",
    "is_absolute",
    "read_bundle",
    "references",
    "refuse_foreign_references",
    "resource_bytes",
    "rewrite_references",
]
