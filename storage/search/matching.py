"""Selects of matching resources that other layers reuse.

- ``matching_surrogate_ids``: a Select of the surrogate ids of one type's current, live resources in a
  partition that match a query (or any of several): bulk ``$export`` ``_typeFilter``, bulk update and
  bulk delete;
- ``select_surrogate_ids``: the same, restricted to a surrogate-id range and run (bulk jobs' ranges);
- ``compartment_members``: resources of a type that point at given compartment owners (Patient);
- ``find_matching`` and ``lock_condition``: conditional create, also inside a transaction Bundle.

Every select is scoped to the partition's integer id; an unknown partition (None) matches nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, false, or_, select, text
from sqlalchemy.orm import Session

from storage.models import ResourceRow
from storage.search.criteria import Scope, conditions, live
from storage.search.execute import Pairs, match_select, query_pairs
from storage.search.query import SearchQuery, parse_search
from storage.search.registry import SearchRegistry, registry_for
from storage.search.tables import reference_index

if TYPE_CHECKING:
    from storage.versions import PartitionSession, StoredVersion

Queries = str | Pairs | Sequence[Sequence[Sequence[str]]]


def _queries(query: Any) -> list[list[tuple[str, str]]]:
    """Return one or several queries as lists of pairs (a list of queries is OR-ed)."""
    if isinstance(query, str):
        return [query_pairs(query)]
    items = list(query)
    if items and (isinstance(items[0], str) or not isinstance(items[0][0], str)):
        return [query_pairs(q) for q in items]
    return [query_pairs(items)]


def matching_surrogate_ids(
    session: Session,
    partition_id: int | None,
    rtype: str,
    query: Queries,
    *,
    base: str | None = None,
    registry: SearchRegistry | None = None,
) -> Select[Any]:
    """Return a Select of the surrogate ids of current, live ``rtype`` resources of a partition that match.

    ``query`` is a query string, a list of (name, value) pairs, or a list of such queries (OR-ed, as
    ``_typeFilter`` asks). Only criteria are allowed (InvalidRequest otherwise, and for unknown parameters).
    """
    registry = registry or registry_for(session, partition_id)
    parsed = [parse_search(registry, [rtype], q, criteria_only=True) for q in _queries(query)]
    if partition_id is None or not parsed:
        for p in parsed:  # values are checked (400) the same way whether the partition exists or not
            match_select(p, Scope(0, base))
        return select(ResourceRow.surrogate_id).where(false())
    scope = Scope(partition_id, base)
    if len(parsed) == 1:
        return match_select(parsed[0], scope)[1]
    row = ResourceRow
    either = [conditions(row, rtype, p.criteria, scope) for p in parsed]
    return select(row.surrogate_id).where(*live(row, scope, rtype), or_(*(and_(*c) for c in either)))


def select_surrogate_ids(
    session: Session,
    partition_id: int | None,
    rtype: str,
    query: Queries,
    *,
    low: int | None = None,
    high: int | None = None,
    base: str | None = None,
) -> list[int]:
    """Return the surrogate ids (ascending) of matching ``rtype`` resources between ``low`` and ``high``."""
    stmt = matching_surrogate_ids(session, partition_id, rtype, query, base=base)
    sid = stmt.selected_columns[0]
    if low is not None:
        stmt = stmt.where(sid >= low)
    if high is not None:
        stmt = stmt.where(sid <= high)
    return list(session.scalars(stmt.order_by(sid)))


def compartment_members(
    session: Session,
    partition_id: int | None,
    rtype: str,
    params: Iterable[str],
    owner_type: str,
    owner_ids: Sequence[str] | None,
) -> Select[Any]:
    """Select the surrogate ids of ``rtype`` resources whose reference ``params`` point at ``owner_type``
    resources of the partition (those with ``owner_ids``, or any when None)."""
    del session  # the select runs in the caller's session
    if partition_id is None:
        return select(ResourceRow.surrogate_id).where(false())
    ref = reference_index.alias()
    where = [
        ref.c.partition_id == partition_id,
        ref.c.resource_type == rtype,
        ref.c.param.in_(list(params)),
        ref.c.target_type == owner_type,
        ref.c.url.is_(None),
    ]
    if owner_ids is not None:
        where.append(ref.c.target_id.in_(list(owner_ids)))
    return select(ref.c.surrogate_id).where(*where).distinct()


def find_matching(
    uow: PartitionSession, query: SearchQuery, *, base: str | None = None, limit: int = 2
) -> list[StoredVersion]:
    """Return up to ``limit`` current versions in the unit of work's partition that match a parsed query.

    It sees the unit of work's own uncommitted writes (a transaction Bundle). A caller that creates when
    nothing matches should take ``lock_condition`` first, so that two concurrent requests with the same
    condition cannot both create.
    """
    pid = uow.resources.partition_id()
    if pid is None:
        match_select(query, Scope(0, base))
        return []
    stmt = match_select(query, Scope(pid, base))[1]
    sid = stmt.selected_columns[0]
    ids = list(uow.session.scalars(stmt.order_by(sid).limit(limit)))
    return uow.resources.by_surrogate_ids(ids)


def lock_condition(uow: PartitionSession, query: SearchQuery) -> None:
    """Serialise conditional creates with the same criteria in this partition until the transaction ends."""
    key = json.dumps([uow.partition, list(query.types), sorted(query.applied)])
    uow.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
