"""Batch and transaction Bundles: ``POST [base]`` with a Bundle of type batch or transaction.

A transaction runs in one unit of work: every entry succeeds or none is stored. Entries run in the order the
FHIR specification gives (DELETE, POST, PUT, GET/HEAD); ``urn:uuid:``/``urn:oid:`` (and other) fullUrls of
created or updated resources are resolved, and references to them in other entries are rewritten to
``Type/id`` in the client's bytes. A batch runs each entry in a unit of work of its own and reports each
failure in that entry's ``response.outcome``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.http import HTTP_STATUS_CODES

from api.http import base_url, fhir_response, prefer_return
from api.typed import current_request
from core.errors import (
    BulkheadError,
    Gone,
    Issue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
)
from core.fhirdates import format_instant, parse_instant
from core.fhirjson import dumps
from core.outcome import operation_outcome
from services import rest as service
from services.bundle_checks import check_overlaps, check_same_criteria, relabel
from services.bundle_entries import (
    ORDER,
    Bases,
    Entry,
    check_references,
    etag_version,
    is_absolute,
    rewrite_references,
)
from services.bundle_requests import EntryOutcome
from services.bundle_search import searchset
from services.conditional import (
    conditional_delete_in,
    conditional_patch_target,
    conditional_update_target,
    find_matching,
)
from services.patching import patch_from_entry
from services.render import render_bundle
from services.requests import FhirRequest
from storage import Database, StoredVersion, UnitOfWork

log = logging.getLogger(__name__)
bp = Blueprint("transactions", __name__)


@dataclass
class Result:
    """What one entry did: a status, the version it wrote or read, or the error it met."""

    status: int
    stored: StoredVersion | None = None
    created: bool = False
    error: BulkheadError | None = None
    body: bytes | None = None


def _db() -> Database:
    database: Database = current_app.extensions["bulkhead.db"]
    return database


def _resolve_conditional(uow: UnitOfWork, entry: Entry, base: str) -> Result | None:
    """Return the existing match of a conditional create, None when the entry must create.

    ``find_matching`` holds a lock on the condition until the unit of work ends, so two concurrent
    conditional creates with the same criteria cannot both create.
    """
    assert entry.rtype is not None and entry.condition is not None
    found = find_matching(uow, entry.condition, base=base)
    if not found:
        return None
    if len(found) > 1:
        raise PreconditionFailed(
            f"ifNoneExist {entry.if_none_exist!r} matches {len(found)} resources; it must match at most one"
        )
    entry.rid = found[0].resource_id
    return Result(200, stored=found[0])


def _resolve_target(uow: UnitOfWork, entry: Entry, base: str) -> None:
    """Find the resource a conditional update or patch writes (412 when the criteria match several).

    Inside a transaction this runs after the deletes and before the creates, as ``ifNoneExist`` does, so
    that every identity is known before references are resolved and overlaps are checked.
    """
    if not entry.conditional or entry.method not in {"PUT", "PATCH"} or entry.rid is not None:
        return
    assert entry.rtype is not None and entry.search is not None
    if entry.method == "PATCH":
        entry.rid = conditional_patch_target(uow, entry.rtype, entry.search, base=base)
        return
    assert entry.resource is not None
    entry.rid = conditional_update_target(uow, entry.rtype, entry.resource, entry.search, base=base)
    entry.resource = {**entry.resource, "id": entry.rid}


def _read(uow: UnitOfWork, entry: Entry, base: str) -> Result:
    assert entry.rtype is not None
    if entry.rid is None:
        settings = current_app.config["BULKHEAD_SETTINGS"]
        assert entry.search is not None
        return Result(200, body=searchset(uow, entry.search, base, settings))
    if entry.vid is not None:
        stored = (
            uow.resources.version(entry.rtype, entry.rid, int(entry.vid)) if entry.vid.isdigit() else None
        )
    else:
        stored = uow.resources.current(entry.rtype, entry.rid)
    if stored is None:
        raise NotFound(f"{entry.rtype}/{entry.rid} is not known")
    if stored.deleted:
        raise Gone(f"{entry.rtype}/{entry.rid} was deleted")
    if entry.if_none_match is not None and etag_version(entry.if_none_match) == stored.version:
        return Result(304, stored=stored)
    if entry.if_modified_since is not None:
        since = parse_instant(entry.if_modified_since)
        if stored.last_updated <= since:
            return Result(304, stored=stored)
    return Result(200, stored=stored)


def _run(uow: UnitOfWork, entry: Entry, base: str) -> Result:
    """Run one entry inside ``uow``."""
    assert entry.rtype is not None
    if entry.method == "DELETE" and entry.conditional:
        assert entry.search is not None
        deleted = conditional_delete_in(uow, entry.rtype, entry.search, base=base, if_match=entry.if_match)
        entry.rid = deleted.resource_id if deleted is not None else None
        return Result(204, stored=deleted)
    if entry.method == "DELETE":
        assert entry.rid is not None
        deleted = service.delete_in(uow, entry.rtype, entry.rid, if_match=entry.if_match)
        return Result(204, stored=deleted)
    if entry.method == "PATCH":
        assert entry.rid is not None and entry.patch is not None
        written = service.patch_in(uow, entry.rtype, entry.rid, entry.patch, if_match=entry.if_match)
        return Result(200, stored=written.stored)
    if entry.method == "POST":
        assert entry.raw is not None and entry.resource is not None
        written = service.create_in(uow, entry.rtype, entry.raw, entry.resource, rid=entry.rid)
        return Result(201, stored=written.stored, created=True)
    if entry.method == "PUT":
        assert entry.rid is not None and entry.raw is not None and entry.resource is not None
        written = service.update_in(
            uow,
            entry.rtype,
            entry.rid,
            entry.raw,
            entry.resource,
            if_match=entry.if_match,
            keep_identical=current_app.config["BULKHEAD_SETTINGS"].update_keep_identical,
        )
        return Result(201 if written.created else 200, stored=written.stored, created=written.created)
    return _read(uow, entry, base)


def _prepare(entry: Entry, mapping: dict[str, str], bases: Bases) -> None:
    """Rewrite resolved references in the entry's bytes, then refuse what remains unresolved or foreign."""
    if entry.raw is None:
        return
    rewritten = rewrite_references(entry.raw, mapping)
    if rewritten is not entry.raw and rewritten != entry.raw:
        entry.raw, entry.resource = rewritten, orjson.loads(rewritten)
        if entry.method == "PUT" and entry.conditional and entry.rid is not None:
            entry.resource = {**(entry.resource or {}), "id": entry.rid}
        if entry.method == "PATCH":
            entry.patch = patch_from_entry(entry.resource)
    check_references(entry, bases)


def reference_map(entries: list[Entry]) -> dict[str, str]:
    """Map each fullUrl of a created or updated entry (and the ``Type/id`` a RESTful fullUrl of a created
    entry ends with, as the official examples write it) to the ``Type/id`` it is stored under."""
    mapping: dict[str, str] = {}
    for e in entries:
        if not e.full_url or not e.target or e.method not in {"POST", "PUT"}:
            continue
        if e.full_url != e.target:
            mapping[e.full_url] = e.target
        parts = e.full_url.rstrip("/").split("/")
        if e.method == "POST" and is_absolute(e.full_url) and len(parts) >= 2 and parts[-2] == e.rtype:
            mapping.setdefault(f"{parts[-2]}/{parts[-1]}", e.target)
    return mapping


def _processing_order(entry: Entry) -> tuple[int, str, str, int]:
    """Order entries as FHIR asks (DELETE, POST, PUT/PATCH, GET/HEAD); within DELETE and PUT/PATCH, by target,
    so that concurrent transactions creating the same new ids insert them in one order (409, not deadlock)."""
    if entry.method in {"PUT", "PATCH", "DELETE"}:
        return (ORDER[entry.method], entry.rtype or "", entry.rid or "", entry.index)
    return (ORDER[entry.method], "", "", entry.index)


def _lock_targets(uow: UnitOfWork, entries: list[Entry]) -> None:
    """Lock the current rows of every resource the transaction updates or deletes, in one global order, so
    that two transactions touching the same resources in different orders wait instead of deadlocking."""
    targets = {
        (e.rtype, e.rid) for e in entries if e.method in {"PUT", "PATCH", "DELETE"} and e.rtype and e.rid
    }
    for rtype, rid in sorted(targets):
        assert rtype is not None and rid is not None
        uow.resources.current(rtype, rid, lock=True)


def run_transaction(db: Database, partition: str, entries: list[Entry], bases: Bases) -> list[Result]:
    """Run every entry in one unit of work; the first failure rolls everything back and is raised."""
    for entry in entries:
        if entry.problem is not None:
            raise relabel(entry.problem, entry)
        if entry.method == "POST" and entry.if_none_exist is None:
            entry.rid = str(uuid.uuid4())
    check_same_criteria(entries)
    ordered = sorted(entries, key=_processing_order)
    results: dict[int, Result] = {}
    base = base_url(partition)
    with db.unit_of_work(partition) as uow:
        current: Entry | None = None
        try:
            _lock_targets(uow, entries)
            for current in (e for e in ordered if e.method == "DELETE"):
                results[current.index] = _run(uow, current, base)
            for current in (e for e in ordered if e.method == "POST" and e.if_none_exist is not None):
                found = _resolve_conditional(uow, current, base)
                if found is not None:
                    results[current.index] = found
                else:
                    current.rid = str(uuid.uuid4())
            for current in (e for e in ordered if e.conditional and e.method in {"PUT", "PATCH"}):
                _resolve_target(uow, current, base)
            current = None
            check_overlaps(entries)
            mapping = reference_map(entries)
            for current in entries:
                _prepare(current, mapping, bases)
            for current in (e for e in ordered if e.method != "DELETE" and e.index not in results):
                results[current.index] = _run(uow, current, base)
        except BulkheadError as exc:
            raise relabel(exc, current) if current is not None else exc from None
        uow.commit()
    log.info("partition=%s transaction of %d entries committed", partition, len(entries))
    return [results[e.index] for e in entries]


def _run_alone(db: Database, partition: str, entry: Entry, bases: Bases) -> Result:
    base = base_url(partition)
    with db.unit_of_work(partition) as uow:
        if entry.method == "POST" and entry.if_none_exist is not None:
            found = _resolve_conditional(uow, entry, base)
            if found is not None:
                return found
        _resolve_target(uow, entry, base)
        _prepare(entry, {}, bases)
        result = _run(uow, entry, base)
        uow.commit()
    return result


def run_batch(db: Database, partition: str, entries: list[Entry], bases: Bases) -> list[Result]:
    """Run each entry on its own; a failure is that entry's result and the others go on."""
    results: dict[int, Result] = {}
    for entry in sorted(entries, key=lambda e: (ORDER.get(e.method, 9), e.index)):
        try:
            if entry.problem is not None:
                raise entry.problem
            results[entry.index] = _run_alone(db, partition, entry, bases)
        except BulkheadError as exc:
            results[entry.index] = Result(exc.status, error=relabel(exc, entry))
    failed = sum(1 for r in results.values() if r.error is not None)
    log.info("partition=%s batch of %d entries, %d failed", partition, len(entries), failed)
    return [results[e.index] for e in entries]


def _status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES.get(status, '')}".strip()


def render_response(kind: str, partition: str, entries: list[Entry], results: list[Result]) -> bytes:
    """Serialise the batch-response or transaction-response Bundle."""
    base = base_url(partition)
    choice = prefer_return()
    out: list[dict[str, Any]] = []
    raws: list[bytes | None] = []
    for entry, result in zip(entries, results, strict=True):
        item: dict[str, Any] = {}
        response: dict[str, Any] = {"status": _status_line(result.status)}
        stored = result.stored
        raw: bytes | None = None
        if stored is not None:
            path = f"{stored.resource_type}/{stored.resource_id}"
            if not stored.deleted:
                item["fullUrl"] = f"{base}/{path}"
            if entry.method in {"POST", "PUT"}:
                response["location"] = f"{base}/{path}/_history/{stored.version}"
            response["etag"] = f'W/"{stored.version}"'
            response["lastModified"] = format_instant(stored.last_updated)
            show = entry.method != "HEAD" and result.status != 304 and stored.raw is not None
            if entry.method in {"GET", "HEAD"} or choice == "representation":
                raw = stored.raw if show else None
            if choice == "OperationOutcome" and entry.method not in {"GET", "HEAD"}:
                text = f"{entry.method} {path}: version {stored.version} ({_status_line(result.status)})"
                response["outcome"] = operation_outcome(
                    [Issue(text, code="informational", severity="information")]
                )
        if result.error is not None:
            response["outcome"] = operation_outcome(result.error.issues)
        if result.body is not None and entry.method == "GET":
            raw = result.body
        if raw is not None:
            item["resource"] = "__RAW__"
        item["response"] = response
        out.append(item)
        raws.append(raw)
    head = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": f"{kind}-response",
        "link": [{"relation": "self", "url": base}],
    }
    if not out:
        return dumps(head)
    return render_bundle(head, out, raws)


@bp.route("/", methods=["PUT", "PATCH", "DELETE"])
def other_methods_on_the_base(partition: str) -> Response:
    """Answer 405 to writes on the base other than POST (werkzeug would say 404 without a slash)."""
    raise MethodNotAllowed(
        f"{request.method} is not an interaction on the base; POST a batch or transaction Bundle",
    )


@bp.post("/")
def batch_or_transaction(partition: str) -> Response:
    """Run a batch or transaction Bundle in the partition."""
    typed = current_request()
    read = typed.bundle
    assert read is not None
    kind, entries, bases = read.kind, read.entries, read.bases
    runner = run_transaction if kind == "transaction" else run_batch
    try:
        results = runner(_db(), partition, entries, bases)
    except BulkheadError as exc:
        # Nothing of a failed transaction is stored; each entry's attempt is still audited.
        _remember_outcomes(typed.entries, entries, [Result(exc.status, error=exc) for _ in entries])
        raise
    _remember_outcomes(typed.entries, entries, results)
    return fhir_response(render_response(kind, partition, entries, results))


def _remember_outcomes(typed: tuple[FhirRequest, ...], entries: list[Entry], results: list[Result]) -> None:
    """Keep what each entry did for its own audit event (``api.security.audit``)."""
    g.bulkhead_entry_outcomes = [
        EntryOutcome(
            index=entry.index,
            interaction=str(request.interaction),
            method=entry.method,
            url=entry.url,
            resource_type=result.stored.resource_type if result.stored is not None else entry.rtype,
            resource_id=result.stored.resource_id if result.stored is not None else entry.rid,
            status=result.status,
        )
        for request, entry, result in zip(typed, entries, results, strict=True)
    ]
