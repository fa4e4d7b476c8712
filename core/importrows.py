"""Turn NDJSON lines into import records, and decide what each record does to the stored versions.

The rules (documented in docs/bulk-operations.md):

- Every line needs ``resourceType`` and ``id``: imports keep client ids, and the id is what makes a retried
  import idempotent. ``meta.source`` is filled from ``inputSource`` when absent.
- ``InitialLoad`` only creates: every record is version 1 (``meta.versionId`` from the file is ignored). A
  resource that existed before the import started is left alone; the line is an error unless its content
  equals the stored one.
- ``IncrementalLoad`` keeps ``meta.versionId`` and ``meta.lastUpdated`` from the file. A line with a version
  id stores that version (as history when a later version exists). A line without one stores the next version
  after the resource's last version from before the import, unless its content equals that version's (then
  nothing is stored). A version that existed before the import with other content is an error.
- ``meta.lastUpdated`` missing from a line is the import's transaction time.
- Lines that target the same resource version within one import resolve to the line with the latest
  ``meta.lastUpdated``, then the greatest SHA-256 of its stored bytes: the result depends on the lines only,
  not on the order in which files, ranges or workers meet them.
- "Content equal" compares the resources without ``meta.versionId`` and ``meta.lastUpdated``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from core.errors import InvalidRequest, Issue
from core.fhirdates import format_instant
from core.fhirjson import dump_with
from core.fhirpath_limits import search_parameter_issues
from core.fhirtypes import resource_types
from core.importspec import FULL, INITIAL, NONE, STRUCTURAL
from core.validation import ID_PATTERN, full_issues, structural_issues

_REFERENCE_OK = (
    "urn:uuid:",
    "urn:oid:",
    "http://",
    "https://",
    "#",
)


class LineError(Exception):
    """A line that cannot be imported; ``issues`` say why."""

    def __init__(self, issues: list[Issue]):
        super().__init__(issues[0].diagnostics if issues else "invalid line")
        self.issues = issues


@dataclass
class ImportRecord:
    """One parsed line, ready to be stored: the resource and what the file says of its version."""

    offset: int
    resource_type: str
    resource_id: str
    version: int | None
    last_updated: datetime | None
    resource: dict[str, Any]
    line: bytes
    source_added: bool = False
    _content: bytes | None = field(repr=False, default=None)

    @property
    def content(self) -> bytes:
        """Return the canonical bytes the "content equal" rule compares (computed when first needed)."""
        if self._content is None:
            self._content = normalized(self.resource)
        return self._content


def normalized(resource: dict[str, Any]) -> bytes:
    """Return the canonical bytes of a resource without ``meta.versionId`` and ``meta.lastUpdated``."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        rest = {k: v for k, v in meta.items() if k not in {"versionId", "lastUpdated"}}
        resource = {k: v for k, v in resource.items() if k != "meta"}
        if rest:
            resource["meta"] = rest
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def _references(value: Any, path: str, out: list[Issue]) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and not _reference_ok(ref):
            out.append(Issue(f"{path}.reference {ref!r} is not a valid reference", expression=(path,)))
        for key, item in value.items():
            if isinstance(item, dict | list):
                _references(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _references(item, f"{path}[{i}]", out)


def _reference_ok(ref: str) -> bool:
    if ref.startswith(_REFERENCE_OK):
        return len(ref) > 1
    parts = ref.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper() and ID_PATTERN.fullmatch(parts[1]):
        return len(parts) == 2 or (parts[2] == "_history" and bool(parts[3]))
    return False


def _instant(value: Any) -> datetime:
    from core.fhirdates import parse_range

    if not isinstance(value, str) or "T" not in value or not (value.endswith("Z") or value[-6] in "+-"):
        raise LineError(
            [Issue(f"meta.lastUpdated {value!r} is not an instant", expression=("meta.lastUpdated",))]
        )
    if len(value) in (20, 24) and value[-1] == "Z" and value[4] == "-" and value[10] == "T":
        try:  # the common spellings (seconds or milliseconds, UTC), fast
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    try:
        return parse_range(value)[0]
    except InvalidRequest as exc:
        raise LineError([Issue(exc.message, expression=("meta.lastUpdated",))]) from None


def _trusted_issues(resource: dict[str, Any], expected_type: str | None) -> list[Issue]:
    """Return what even a trusted load must refuse: no known resourceType, the wrong type, a bad id."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in resource_types():
        return [Issue(f"Unknown or missing resourceType {rtype!r}", code="not-supported")]
    if expected_type is not None and rtype != expected_type:
        return [Issue(f"resourceType {rtype!r} does not match the input's type {expected_type!r}")]
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_PATTERN.fullmatch(rid)):
        return [Issue(f"Invalid id {rid!r}", expression=(f"{rtype}.id",))]
    return []


def build_record(
    offset: int,
    line: bytes,
    *,
    mode: str,
    validation: str,
    expected_type: str | None = None,
    input_source: str | None = None,
) -> ImportRecord:
    """Parse and check one line; raise LineError naming every problem."""
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError([Issue(f"The line is not valid JSON: {exc}", code="structure")]) from None
    if not isinstance(resource, dict):
        raise LineError([Issue("The line is not a JSON object", code="structure")])
    if validation == FULL:
        issues = full_issues(resource, expected_type)
    elif validation == STRUCTURAL:
        issues = structural_issues(resource, expected_type)
        if not issues:
            _references(resource, str(resource.get("resourceType")), issues)
    else:
        issues = _trusted_issues(resource, expected_type)
    # At every validation level: a bound on the FHIRPath the server will evaluate, not validation.
    issues = issues + search_parameter_issues(resource)
    if issues:
        raise LineError(issues)
    rtype = resource["resourceType"]
    rid = resource.get("id")
    if not isinstance(rid, str):
        raise LineError(
            [Issue(f"The {rtype} has no id; imported resources keep the id of their line", "required")]
        )
    meta = resource.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise LineError([Issue("meta is not an object", expression=(f"{rtype}.meta",))])
    meta = meta or {}
    version: int | None = None
    raw_version = meta.get("versionId")
    if raw_version is not None and mode != INITIAL:
        if not isinstance(raw_version, str) or not raw_version.isdigit() or int(raw_version) < 1:
            raise LineError(
                [
                    Issue(
                        f"meta.versionId {raw_version!r} is not a positive integer",
                        expression=("meta.versionId",),
                    )
                ]
            )
        version = int(raw_version)
    last_updated = _instant(meta["lastUpdated"]) if "lastUpdated" in meta else None
    added = bool(input_source) and "source" not in meta
    if added:
        resource["meta"] = {**meta, "source": input_source}
    return ImportRecord(offset, rtype, rid, version, last_updated, resource, line, source_added=added)


def render(record: ImportRecord, version: int, when: datetime) -> bytes:
    """Return the bytes stored for ``record`` as ``version``: the line, with id and meta set by the server.

    A line whose meta already says exactly this is stored as it is.
    """
    meta = dict(record.resource.get("meta") or {})
    stamp = meta.get("lastUpdated") if record.last_updated is not None else format_instant(when)
    if not record.source_added and meta.get("versionId") == str(version) and meta.get("lastUpdated") == stamp:
        return record.line
    ordered = {"versionId": str(version), "lastUpdated": stamp}
    ordered.update({k: v for k, v in meta.items() if k not in ordered})
    return dump_with(record.line, record.resource, id=record.resource_id, meta=ordered)


def rank(last_updated: datetime, raw: bytes) -> tuple[datetime, bytes]:
    """Return the order in which lines for the same version win: later lastUpdated, then larger SHA-256."""
    return last_updated, hashlib.sha256(raw).digest()


@dataclass
class Existing:
    """A stored version of a resource, as the import decision sees it.

    ``pre`` says whether it was stored before the import began (surrogate id at or below the watermark).
    ``surrogate_id`` is None for a version this batch is about to insert.
    """

    version: int
    last_updated: datetime
    is_history: bool
    is_deleted: bool
    pre: bool
    surrogate_id: int | None = None
    raw: bytes | None = None
    content: bytes | None = None
    pending: Decision | None = None


@dataclass
class Decision:
    """What one record does: insert a version, replace a version in place, nothing, or fail."""

    kind: str  # "insert" | "replace" | "unchanged" | "error"
    version: int = 0
    last_updated: datetime | None = None
    raw: bytes = b""
    current: bool = False
    demote: Existing | None = None
    target: Existing | None = None
    reason: str = ""


def _content(row: Existing, load: Callable[[Existing], bytes | None]) -> bytes | None:
    if row.content is None:
        raw = row.raw if row.raw is not None else load(row)
        row.content = normalized(orjson.loads(raw)) if raw else b""
    return row.content or None


def decide(
    record: ImportRecord,
    rows: list[Existing],
    *,
    mode: str,
    job_time: datetime,
    load: Callable[[Existing], bytes | None],
) -> Decision:
    """Decide what ``record`` does given the stored versions ``rows`` of its resource (updated in place)."""
    when = record.last_updated or job_time
    pre_rows = [r for r in rows if r.pre]
    if mode == INITIAL:
        if pre_rows:
            existing = max(pre_rows, key=lambda r: r.version)
            if not existing.is_deleted and _content(existing, load) == record.content:
                return Decision("unchanged")
            return Decision("error", reason="exists already; InitialLoad only creates resources")
        target = 1
    elif record.version is not None:
        target = record.version
    else:
        latest = max(pre_rows, key=lambda r: r.version) if pre_rows else None
        if latest is not None and not latest.is_deleted and _content(latest, load) == record.content:
            return Decision("unchanged")
        target = latest.version + 1 if latest is not None else 1
    raw = render(record, target, when)
    same = next((r for r in rows if r.version == target), None)
    if same is not None:
        if not same.is_deleted and _content(same, load) == record.content:
            return Decision("unchanged")
        if same.pre:
            return Decision("error", reason=f"version {target} exists already with other content")
        stored = same.raw if same.raw is not None else load(same)
        if stored is not None and rank(when, raw) <= rank(same.last_updated, stored):
            return Decision("unchanged", reason="superseded")
        same.raw, same.last_updated, same.content, same.is_deleted = raw, when, record.content, False
        if same.pending is not None:  # inserted by this batch: the insert takes the winning line instead
            same.pending.raw, same.pending.last_updated = raw, when
            return Decision("unchanged", reason="superseded another line")
        return Decision("replace", target, when, raw, current=not same.is_history, target=same)
    current = next((r for r in rows if not r.is_history), None)
    as_current = current is None or target > current.version
    demote = None
    if as_current and current is not None:
        current.is_history = True
        if current.pending is not None:
            current.pending.current = False
        else:
            demote = current
    decision = Decision("insert", target, when, raw, current=as_current, demote=demote)
    rows.append(Existing(target, when, not as_current, False, False, None, raw, record.content, decision))
    return decision


__all__ = ["NONE", "Decision", "Existing", "ImportRecord", "LineError", "build_record", "decide", "render"]
