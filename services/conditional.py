"""Conditional interactions: create (``If-None-Exist``), update, delete and patch by search criteria.

The ``*_in`` functions need no HTTP request: a batch or transaction Bundle calls them inside its own unit of
work. ``find_matching`` takes a transaction-scoped lock on (partition, type, criteria) first, so two
concurrent conditional writes with the same criteria cannot both create. The search runs in the unit of
work's partition only, and criteria that name no search parameter are refused (400): a conditional write
never means "every resource of the type".

- update: no match → create (with the body's id when it has one, else a server id); one match → update it (a
  body id other than the match's is a 400); several → 412.
- delete (single-match semantics): no match → nothing to do; one → delete it; several → 412.
- patch: no match → 404; one → patch it; several → 412.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from core.errors import InvalidRequest, NotFound, PreconditionFailed
from core.fhirtypes import require_type
from services import rest as service
from storage import Database, StoredVersion, UnitOfWork
from storage.search import SearchQuery, lock_condition, parse_search, query_pairs, registry_for
from storage.search import find_matching as _find_matching

if TYPE_CHECKING:
    from services.patching import Patch

_T = TypeVar("_T")


def parse_criteria(uow: UnitOfWork, rtype: str, query: str) -> SearchQuery:
    """Parse criteria given as a query string (``Type?a=b`` or ``a=b``) with the partition's parameters,
    for callers that hold criteria as text rather than a typed request."""
    registry = registry_for(uow.session, uow.resources.partition_id())
    return parse_search(registry, [rtype], query_pairs(query), criteria_only=True)


def find_matching(
    uow: UnitOfWork, query: SearchQuery, *, base: str | None = None, limit: int = 2
) -> list[StoredVersion]:
    """Return up to ``limit`` current resources of the unit of work's partition that match parsed criteria.

    Takes the condition lock for the rest of the transaction (a create that follows is race-free).
    """
    if not query.criteria:
        raise InvalidRequest("The condition names no search parameters")
    lock_condition(uow, query)
    return _find_matching(uow, query, base=base, limit=limit)


def conditional_create_in(
    uow: UnitOfWork,
    rtype: str,
    raw: bytes,
    resource: dict[str, Any],
    condition: SearchQuery,
    *,
    base: str | None = None,
) -> service.WriteResult:
    """Create inside an open unit of work unless ``condition`` matches: 0 → create, 1 → it, more → 412."""
    found = find_matching(uow, condition, base=base)
    if len(found) > 1:
        raise PreconditionFailed(f"If-None-Exist {_text(condition)!r} matches more than one {rtype}")
    if found:
        return service.WriteResult(found[0], False)
    return service.create_in(uow, rtype, raw, resource)


def _single(
    uow: UnitOfWork, rtype: str, query: SearchQuery, what: str, base: str | None
) -> StoredVersion | None:
    found = find_matching(uow, query, base=base)
    if len(found) > 1:
        raise PreconditionFailed(
            f"Conditional {what} {rtype}?{_text(query)} matches more than one resource; "
            "it must match at most one"
        )
    return found[0] if found else None


def conditional_update_target(
    uow: UnitOfWork, rtype: str, resource: dict[str, Any], query: SearchQuery, *, base: str | None = None
) -> str:
    """Return the id a conditional update writes: the one match's, else the body's id, else a new id."""
    match = _single(uow, rtype, query, "update", base)
    body_id = resource.get("id")
    if match is None:
        return body_id if isinstance(body_id, str) else str(uuid.uuid4())
    if body_id is not None and body_id != match.resource_id:
        raise InvalidRequest(
            f"The body's id {body_id!r} differs from the id of the resource the criteria match"
        )
    return match.resource_id


def conditional_update_in(
    uow: UnitOfWork,
    rtype: str,
    raw: bytes,
    resource: dict[str, Any],
    query: SearchQuery,
    *,
    base: str | None = None,
    if_match: int | None = None,
    keep_identical: bool = False,
) -> service.WriteResult:
    """Update the one resource ``query`` matches, or create one when none does (412 when several do)."""
    rid = conditional_update_target(uow, rtype, resource, query, base=base)
    return service.update_in(
        uow, rtype, rid, raw, {**resource, "id": rid}, if_match=if_match, keep_identical=keep_identical
    )


def conditional_delete_in(
    uow: UnitOfWork, rtype: str, query: SearchQuery, *, base: str | None = None, if_match: int | None = None
) -> StoredVersion | None:
    """Delete the one resource ``query`` matches; return None when none does (412 when several do)."""
    match = _single(uow, rtype, query, "delete", base)
    if match is None:
        if if_match is not None:
            raise PreconditionFailed(f"If-Match asked for version {if_match}, but nothing matches")
        return None
    return service.delete_in(uow, rtype, match.resource_id, if_match=if_match)


def conditional_patch_target(
    uow: UnitOfWork, rtype: str, query: SearchQuery, *, base: str | None = None
) -> str:
    """Return the id of the one resource a conditional patch changes (404 when none matches, 412 several)."""
    match = _single(uow, rtype, query, "patch", base)
    if match is None:
        raise NotFound(f"No {rtype} matches the criteria; a conditional patch needs exactly one match")
    return match.resource_id


def conditional_patch_in(
    uow: UnitOfWork,
    rtype: str,
    patch: Patch,
    query: SearchQuery,
    *,
    base: str | None = None,
    if_match: int | None = None,
) -> service.WriteResult:
    """Patch the one resource ``query`` matches."""
    rid = conditional_patch_target(uow, rtype, query, base=base)
    return service.patch_in(uow, rtype, rid, patch, if_match=if_match)


def _own_unit_of_work(db: Database, partition: str, rtype: str, work: Callable[[UnitOfWork], _T]) -> _T:
    """Run ``work`` in a unit of work of its own in the partition, and commit it."""
    require_type(rtype)
    with db.unit_of_work(partition) as uow:
        result = work(uow)
        uow.commit()
    return result


def conditional_update(
    db: Database,
    partition: str,
    rtype: str,
    raw: bytes,
    resource: dict[str, Any],
    query: SearchQuery,
    *,
    base: str | None = None,
    if_match: int | None = None,
    keep_identical: bool = False,
) -> service.WriteResult:
    """Conditionally update in the partition, in a unit of work of its own."""
    return _own_unit_of_work(
        db,
        partition,
        rtype,
        lambda uow: conditional_update_in(
            uow, rtype, raw, resource, query, base=base, if_match=if_match, keep_identical=keep_identical
        ),
    )


def conditional_patch(
    db: Database,
    partition: str,
    rtype: str,
    patch: Patch,
    query: SearchQuery,
    *,
    base: str | None = None,
    if_match: int | None = None,
) -> service.WriteResult:
    """Conditionally patch in the partition, in a unit of work of its own."""
    return _own_unit_of_work(
        db,
        partition,
        rtype,
        lambda uow: conditional_patch_in(uow, rtype, patch, query, base=base, if_match=if_match),
    )


def conditional_delete(
    db: Database,
    partition: str,
    rtype: str,
    query: SearchQuery,
    *,
    base: str | None = None,
    if_match: int | None = None,
) -> StoredVersion | None:
    """Conditionally delete in the partition, in a unit of work of its own."""
    return _own_unit_of_work(
        db,
        partition,
        rtype,
        lambda uow: conditional_delete_in(uow, rtype, query, base=base, if_match=if_match),
    )


def conditional_create(
    db: Database,
    partition: str,
    rtype: str,
    raw: bytes,
    resource: dict[str, Any],
    condition: SearchQuery,
    *,
    base: str | None = None,
) -> service.WriteResult:
    """Create unless a resource matches ``condition`` in the partition (created, or the one match)."""
    require_type(rtype)
    with db.unit_of_work(partition) as uow:
        result = conditional_create_in(uow, rtype, raw, resource, condition, base=base)
        if result.created:
            uow.commit()
    return result


def _text(query: SearchQuery) -> str:
    """Return criteria as a query string, for messages."""
    return urlencode(query.applied)
