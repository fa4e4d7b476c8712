"""Conditional create (``If-None-Exist``): create unless the criteria already match in the partition.

``find_matching`` and ``conditional_create_in`` need no HTTP request: a transaction Bundle calls them inside
its own unit of work. They take a transaction-scoped lock on (partition, type, criteria) first, so two
concurrent conditional creates with the same criteria cannot both create.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api import service
from core.errors import InvalidRequest, PreconditionFailed
from core.fhirtypes import require_type
from storage import StoredVersion, UnitOfWork
from storage.search import find_matching as _find_matching
from storage.search import lock_condition, query_pairs

if TYPE_CHECKING:
    from flask import Response


def find_matching(
    uow: UnitOfWork, rtype: str, query: str, *, base: str | None = None, limit: int = 2
) -> list[StoredVersion]:
    """Return up to ``limit`` current resources of the unit of work's partition that match ``query``.

    Takes the condition lock for the rest of the transaction (a create that follows is race-free).
    """
    if not query_pairs(query):
        raise InvalidRequest("The condition names no search parameters")
    lock_condition(uow, rtype, query)
    return _find_matching(uow, rtype, query, base=base, limit=limit)


def conditional_create_in(
    uow: UnitOfWork,
    rtype: str,
    raw: bytes,
    resource: dict[str, Any],
    condition: str,
    *,
    base: str | None = None,
) -> service.WriteResult:
    """Create inside an open unit of work unless ``condition`` matches: 0 → create, 1 → it, more → 412."""
    found = find_matching(uow, rtype, condition, base=base)
    if len(found) > 1:
        raise PreconditionFailed(f"If-None-Exist {condition!r} matches more than one {rtype}")
    if found:
        return service.WriteResult(found[0], False)
    return service.create_in(uow, rtype, raw, resource)


def conditional_create(
    partition: str, rtype: str, raw: bytes, resource: dict[str, Any], condition: str
) -> Response:
    """Create unless a resource matches ``condition`` in the partition (201 created, 200 existing)."""
    from flask import current_app

    from api.http import base_url, resource_response

    require_type(rtype)
    db = current_app.extensions["bulkhead.db"]
    with db.unit_of_work(partition) as uow:
        result = conditional_create_in(uow, rtype, raw, resource, condition, base=base_url(partition))
        if result.created:
            uow.commit()
    if result.created:
        return resource_response(result.stored, 201, partition, location=True)
    return resource_response(result.stored, 200, partition)
