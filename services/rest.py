"""FHIR interactions as service functions: no HTTP here, the partition is always an argument."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import Conflict, Gone, InvalidRequest, NotFound, PreconditionFailed, Unprocessable
from core.fhirdates import format_instant
from core.fhirjson import dump_with, parse_object, same_content
from core.fhirpatch import patched_bytes
from core.fhirtypes import require_type
from core.validation import validate_id, validate_resource
from storage import Database, PreparedIndex, StaleIndexRows, StoredVersion, UnitOfWork, prepare_index

if TYPE_CHECKING:
    from services.patching import Patch


@dataclass(frozen=True)
class WriteResult:
    """What a write stored, and whether it created the resource."""

    stored: StoredVersion
    created: bool


def _render(raw: bytes, resource: dict[str, Any], rid: str):  # type: ignore[no-untyped-def]
    def render(version: int, when: datetime) -> tuple[bytes, dict[str, Any]]:
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        data = dump_with(raw, resource, id=rid, meta=meta)
        return data, {**resource, "id": rid, "meta": meta}

    return render


def create_in(
    uow: UnitOfWork,
    rtype: str,
    raw: bytes,
    resource: dict[str, Any],
    *,
    rid: str | None = None,
    prepared: PreparedIndex | None = None,
) -> WriteResult:
    """Create a resource with a server-assigned id (``rid`` when one was assigned ahead, as a
    transaction does to resolve references) inside an open unit of work.

    ``prepared``: its index rows, extracted before the transaction (``prepare_index``)."""
    validate_resource(resource, rtype)
    rid = rid or str(uuid.uuid4())
    stored = uow.resources.write(rtype, rid, _render(raw, resource, rid), previous=None, prepared=prepared)
    return WriteResult(stored, True)


def update_in(
    uow: UnitOfWork,
    rtype: str,
    rid: str,
    raw: bytes,
    resource: dict[str, Any],
    *,
    if_match: int | None = None,
    prepared: PreparedIndex | None = None,
    keep_identical: bool = False,
) -> WriteResult:
    """Update (or create with the client's id) a resource inside an open unit of work.

    An update that says exactly what the current version says stores nothing and answers with the current
    version, unless ``keep_identical`` (the operator's ``BULKHEAD_UPDATE_KEEP_IDENTICAL``)."""
    validate_id(rid)
    body_id = resource.get("id")
    if body_id is None:
        raise InvalidRequest(
            "An update must carry the resource id in the body",
        )
    if body_id != rid:
        raise InvalidRequest(f"The body's id {body_id!r} does not match the URL's id {rid!r}")
    validate_resource(resource, rtype)
    previous = uow.resources.current(rtype, rid, lock=True)
    current_version = previous.version if previous is not None and not previous.deleted else None
    if if_match is not None and if_match != current_version:
        raise PreconditionFailed(
            f"If-Match asked for version {if_match} but the current version is {current_version or 'none'}"
        )
    if (
        not keep_identical
        and previous is not None
        and not previous.deleted
        and previous.raw is not None
        and same_content(previous.raw, raw)
    ):
        return WriteResult(previous, False)
    stored = uow.resources.write(
        rtype, rid, _render(raw, resource, rid), previous=previous, prepared=prepared
    )
    return WriteResult(stored, previous is None or previous.deleted)


_RELOCKS = 10


def _locked_current(uow: UnitOfWork, rtype: str, rid: str) -> StoredVersion | None:
    """Lock and return the current version, following versions that concurrent writers commit meanwhile.

    A locking read that waited for another writer finds the row it waited for no longer current and returns
    nothing; a fresh read then sees the new version. A patch is relative, so it applies to the latest one.
    """
    for _ in range(_RELOCKS):
        previous = uow.resources.current(rtype, rid, lock=True)
        if previous is not None or uow.resources.current(rtype, rid) is None:
            return previous
    raise Conflict(f"{rtype}/{rid} kept changing while it was being patched; try again")


@dataclass(frozen=True)
class PatchedAhead:
    """A patch applied before the write's transaction: to which version, the result and its index rows."""

    version: int
    before: dict[str, Any]
    after: dict[str, Any]
    prepared: PreparedIndex


def patch_in(
    uow: UnitOfWork,
    rtype: str,
    rid: str,
    patch: Patch,
    *,
    if_match: int | None = None,
    ahead: PatchedAhead | None = None,
) -> WriteResult:
    """Apply a patch to the current version inside an open unit of work; store the result as a new version.

    The patched resource is validated like an update (422, nothing stored); members the patch left alone keep
    their stored bytes. ``ahead`` is the patch applied (and the result's index rows extracted) before the
    transaction: used when the version it was applied to is still the current one.
    """
    validate_id(rid)
    previous = _locked_current(uow, rtype, rid)
    if previous is None:
        raise NotFound(f"{rtype}/{rid} is not known")
    if previous.deleted:
        raise Gone(f"{rtype}/{rid} was deleted")
    if if_match is not None and if_match != previous.version:
        raise PreconditionFailed(
            f"If-Match asked for version {if_match} but the current version is {previous.version}"
        )
    stored_raw = previous.raw
    assert stored_raw is not None
    prepared: PreparedIndex | None = None
    if ahead is not None and ahead.version == previous.version:
        before, after, prepared = ahead.before, ahead.after, ahead.prepared
    else:
        before = parse_object(stored_raw)
        after = patch.apply(before)
    if after.get("resourceType") != rtype or after.get("id") != rid:
        raise Unprocessable("A patch cannot change the resource's resourceType or id")
    validate_resource(after, rtype)

    def render(version: int, when: datetime) -> tuple[bytes, dict[str, Any]]:
        meta = {**(after.get("meta") or {}), "versionId": str(version), "lastUpdated": format_instant(when)}
        return patched_bytes(stored_raw, before, after, version, when), {**after, "meta": meta}

    return WriteResult(uow.resources.write(rtype, rid, render, previous=previous, prepared=prepared), False)


def delete_in(uow: UnitOfWork, rtype: str, rid: str, *, if_match: int | None = None) -> StoredVersion | None:
    """Delete a resource (a new, deleted version); return None if there was nothing to delete."""
    validate_id(rid)
    previous = uow.resources.current(rtype, rid, lock=True)
    if if_match is not None and (previous is None or previous.deleted or previous.version != if_match):
        raise PreconditionFailed(f"If-Match asked for version {if_match}, which is not current")
    if previous is None or previous.deleted:
        return None
    return uow.resources.write(rtype, rid, lambda _v, _t: None, previous=previous)


def create(db: Database, partition: str, rtype: str, raw: bytes, resource: dict[str, Any]) -> WriteResult:
    """Create a resource with a server-assigned id (its index rows extracted before the transaction)."""
    require_type(rtype)
    rid = str(uuid.uuid4())

    def write() -> WriteResult:
        prepared = prepare_index(db, partition, rtype, {**resource, "id": rid})
        with db.unit_of_work(partition) as uow:
            result = create_in(uow, rtype, raw, resource, rid=rid, prepared=prepared)
            uow.commit()
        return result

    return _extracting_ahead(write)


#: Tries of a write whose index rows were extracted before its transaction, when a ``$reindex`` changed
#: the partition's parameters in between (each try extracts with the registry the one before found).
_STALE_TRIES = 3
T = TypeVar("T")


def _extracting_ahead(write: Callable[[], T]) -> T:
    """Run ``write`` again (up to ``_STALE_TRIES``) while its rows extracted ahead are stale (else 409)."""
    for _ in range(_STALE_TRIES - 1):
        try:
            return write()
        except StaleIndexRows:
            continue
    return write()


def update(
    db: Database,
    partition: str,
    rtype: str,
    rid: str,
    raw: bytes,
    resource: dict[str, Any],
    *,
    if_match: int | None = None,
    keep_identical: bool = False,
) -> WriteResult:
    """Update a resource, or create it with the client's id (index rows extracted before the transaction)."""
    require_type(rtype)

    def write() -> WriteResult:
        prepared = prepare_index(db, partition, rtype, {**resource, "id": rid})
        with db.unit_of_work(partition) as uow:
            result = update_in(
                uow,
                rtype,
                rid,
                raw,
                resource,
                if_match=if_match,
                prepared=prepared,
                keep_identical=keep_identical,
            )
            uow.commit()
        return result

    return _extracting_ahead(write)


def delete(
    db: Database, partition: str, rtype: str, rid: str, *, if_match: int | None = None
) -> StoredVersion | None:
    """Delete a resource and return the deletion version; deleting what does not exist succeeds quietly."""
    require_type(rtype)
    with db.unit_of_work(partition) as uow:
        deleted = delete_in(uow, rtype, rid, if_match=if_match)
        uow.commit()
    return deleted


def patch(
    db: Database, partition: str, rtype: str, rid: str, patch: Patch, *, if_match: int | None = None
) -> WriteResult:
    """Patch the current version of a resource (404 unknown, 410 deleted, 412 stale If-Match, 422 invalid).

    The patch is applied, and the result's index rows extracted, before the write's transaction; the
    transaction uses them if the version is still current, and applies the patch again otherwise.
    """
    require_type(rtype)

    def write() -> WriteResult:
        ahead = _patch_ahead(db, partition, rtype, rid, patch)
        with db.unit_of_work(partition) as uow:
            result = patch_in(uow, rtype, rid, patch, if_match=if_match, ahead=ahead)
            uow.commit()
        return result

    return _extracting_ahead(write)


def _patch_ahead(db: Database, partition: str, rtype: str, rid: str, patch: Patch) -> PatchedAhead | None:
    """Apply ``patch`` to the current version outside a transaction; None when ``patch_in`` must decide."""
    validate_id(rid)
    with db.unit_of_work(partition) as uow:
        current = uow.resources.current(rtype, rid)
    if current is None or current.deleted or current.raw is None:
        return None
    before = parse_object(current.raw)
    try:
        after = patch.apply(before)
    except (InvalidRequest, Unprocessable):
        return None  # applied again in the transaction, which answers the error
    if after.get("resourceType") != rtype or after.get("id") != rid:
        return None
    return PatchedAhead(current.version, before, after, prepare_index(db, partition, rtype, after))


def read(db: Database, partition: str, rtype: str, rid: str) -> StoredVersion:
    """Return the current version, or raise NotFound / Gone."""
    require_type(rtype)
    validate_id(rid)
    with db.unit_of_work(partition) as uow:
        stored = uow.resources.current(rtype, rid)
    if stored is None:
        raise NotFound(f"{rtype}/{rid} is not known")
    if stored.deleted:
        raise Gone(f"{rtype}/{rid} was deleted")
    return stored


def vread(db: Database, partition: str, rtype: str, rid: str, version: int) -> StoredVersion:
    """Return one version, or raise NotFound / Gone."""
    require_type(rtype)
    validate_id(rid)
    with db.unit_of_work(partition) as uow:
        stored = uow.resources.version(rtype, rid, version)
    if stored is None:
        raise NotFound(f"{rtype}/{rid} has no version {version}")
    if stored.deleted:
        raise Gone(f"{rtype}/{rid} version {version} is a deletion")
    return stored


def history(
    db: Database,
    partition: str,
    rtype: str | None,
    rid: str | None,
    *,
    since: datetime | None,
    at: datetime | None,
    count: int,
    offset: int,
) -> tuple[list[StoredVersion], int]:
    """Return versions newest first, for an instance, a type or the whole partition."""
    if rtype is not None:
        require_type(rtype)
    if rid is not None:
        validate_id(rid)
    with db.unit_of_work(partition) as uow:
        versions, total = uow.resources.history(rtype, rid, since=since, at=at, count=count, offset=offset)
        # An instance's history is a 404 only when the resource never existed, not when _since or _at
        # leave none of its versions.
        unknown = (
            rtype is not None and rid is not None and total == 0 and uow.resources.current(rtype, rid) is None
        )
    if unknown:
        raise NotFound(f"{rtype}/{rid} is not known")
    return versions, total


__all__ = ["Conflict", "WriteResult", "create", "delete", "history", "patch", "read", "update", "vread"]
