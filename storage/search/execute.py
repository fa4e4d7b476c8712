"""Run searches in one partition: matches, keyset pages, totals, ``_include`` / ``_revinclude``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from core.errors import Issue
from storage.models import ResourceRow
from storage.search.criteria import Scope, conditions, live, local_reference
from storage.search.paging import decode_cursor, encode_cursor, key_of, keyset, order_by, order_columns
from storage.search.query import Include, SearchQuery
from storage.search.tables import reference_index

if TYPE_CHECKING:
    from storage.versions import PartitionSession, StoredVersion

log = logging.getLogger(__name__)
MAX_INCLUDE_ROUNDS = 4
_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]

Pairs = Iterable[tuple[str, str]]


@dataclass(frozen=True)
class SearchResult:
    """One page of a search: matches in order, included resources, total and cursors."""

    matches: list[StoredVersion]
    included: list[StoredVersion] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None
    warnings: list[Issue] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)


def query_pairs(query: str | Pairs) -> list[tuple[str, str]]:
    """Return ``(name, value)`` pairs of a query string (``Type?a=b`` and ``?a=b`` accepted) or pairs."""
    if not isinstance(query, str):
        return [(str(name), str(value)) for name, value in query]
    text_query = query.split("?", 1)[1] if "?" in query else query
    return parse_qsl(text_query, keep_blank_values=True)


def match_select(query: SearchQuery, scope: Scope) -> tuple[Any, Select[Any]]:
    """Return the resource entity and the Select of surrogate ids of current, live matches."""
    row = aliased(ResourceRow, name="r")
    rtype = query.types[0] if len(query.types) == 1 else None
    where = live(row, scope, rtype)
    if rtype is None:
        where.append(row.resource_type.in_(query.types))
    where.extend(conditions(row, rtype, query.criteria, scope))
    return row, select(row.surrogate_id).where(*where)


def _estimate(session: Session, stmt: Select[Any]) -> int:
    """Return the planner's row estimate for ``stmt`` (``_total=estimate``).

    The statement is compiled with its expanding parameters (IN-lists) rendered as one bound parameter per
    value, so that the text given to EXPLAIN has a placeholder for every value the driver sends.
    """
    compiled = stmt.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    plan = session.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled.string, compiled.params)
    data = plan.scalar()
    doc: Any = json.loads(data) if isinstance(data, str) else data
    return int(doc[0]["Plan"]["Plan Rows"])


def _total(session: Session, query: SearchQuery, stmt: Select[Any]) -> int | None:
    mode = query.total or "accurate"
    if mode == "none":
        return None
    if mode == "estimate":
        return _estimate(session, stmt)
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def _page(
    session: Session, query: SearchQuery, scope: Scope, count: int
) -> tuple[list[int], str | None, str | None]:
    """Return the page's surrogate ids and the next / previous cursors."""
    row, stmt = match_select(query, scope)
    columns = order_columns(row, query.sort, scope)
    before = False
    if query.cursor:
        before, values = decode_cursor(query.cursor, columns)
        stmt = stmt.where(keyset(columns, values, before=before))
    stmt = stmt.add_columns(*(c.expr for c in columns))
    stmt = stmt.order_by(*order_by(columns, reverse=before)).limit(count + 1)
    rows = list(session.execute(stmt).all())
    more = len(rows) > count
    rows = rows[:count]
    if before:
        rows.reverse()
    width = len(columns)
    ids = [r[0] for r in rows]
    if not rows:
        return ids, None, None
    has_next = more if not before else True
    has_previous = (more if before else query.cursor is not None) and bool(rows)
    next_cursor = encode_cursor("n", key_of(rows[-1], width)) if has_next else None
    previous_cursor = encode_cursor("p", key_of(rows[0], width)) if has_previous else None
    return ids, next_cursor, previous_cursor


def _include_ids(session: Session, scope: Scope, include: Include, sources: list[StoredVersion]) -> list[int]:
    ref = reference_index.alias()
    target = aliased(ResourceRow, name="t")
    where = [ref.c.partition_id == scope.partition_id, local_reference(ref, scope)]
    if include.param is not None:
        where.append(ref.c.param == include.param)
    if include.reverse:
        if include.source is not None:
            where.append(ref.c.resource_type == include.source)
        if include.target is not None:
            sources = [s for s in sources if s.resource_type == include.target]
        keys = [(s.resource_type, s.resource_id) for s in sources]
        if not keys:
            return []
        where.append(tuple_(ref.c.target_type, ref.c.target_id).in_(keys))
        join_on = target.surrogate_id == ref.c.surrogate_id
    else:
        picked = [s.surrogate_id for s in sources if include.source in {None, s.resource_type}]
        if not picked:
            return []
        where.append(ref.c.surrogate_id.in_(picked))
        if include.reached:
            # Only the types the include was authorized to reach, whatever a stored reference names.
            where.append(ref.c.target_type.in_(include.reached))
        join_on = (target.resource_type == ref.c.target_type) & (target.resource_id == ref.c.target_id)
    stmt = (
        select(target.surrogate_id)
        .select_from(ref)
        .join(target, join_on & (target.partition_id == scope.partition_id))
        .where(*where, *live(target, scope))
        .distinct()
    )
    return list(session.scalars(stmt))


def _includes(
    uow: PartitionSession, query: SearchQuery, scope: Scope, matches: list[StoredVersion], limit: int
) -> tuple[list[StoredVersion], list[Issue]]:
    seen = {m.surrogate_id for m in matches}
    included: list[StoredVersion] = []
    warnings: list[Issue] = []
    frontier = matches
    for round_number in range(MAX_INCLUDE_ROUNDS):
        todo = [i for i in query.includes if round_number == 0 or i.iterate]
        if not todo or not frontier:
            break
        found: list[int] = []
        for include in todo:
            found.extend(i for i in _include_ids(uow.session, scope, include, frontier) if i not in seen)
        fresh = sorted(set(found))
        if len(included) + len(fresh) > limit:
            fresh = fresh[: max(0, limit - len(included))]
            warnings.append(
                Issue(
                    f"More than {limit} resources to include; the rest were left out", "too-costly", "warning"
                )
            )
        seen.update(fresh)
        frontier = uow.resources.by_surrogate_ids(fresh)
        included.extend(frontier)
        if warnings:
            break
    return included, warnings


def search(
    uow: PartitionSession,
    query: SearchQuery,
    *,
    base: str | None = None,
    default_count: int = 20,
    include_limit: int = 1000,
) -> SearchResult:
    """Run a parsed search in the unit of work's partition and return one page.

    The query was parsed once, when the request was read (and authorized by what it reaches); it is run
    as it is, never parsed again from the request.
    """
    types = query.types
    pid = uow.resources.partition_id()
    warnings = list(query.warnings)
    if pid is None:
        # Check values and cursor as for a partition that exists: same answers, nothing revealed.
        match_select(query, Scope(0, base))
        if query.cursor:
            parse_cursor_or_fail(query)
        total = 0 if query.total != "none" else None
        return SearchResult([], total=total, warnings=warnings, applied=list(query.applied))
    scope = Scope(pid, base)
    _, stmt = match_select(query, scope)
    total = _total(uow.session, query, stmt)
    count = query.count if query.count is not None else default_count
    if query.summary == "count" or count == 0:
        return SearchResult([], total=total, warnings=warnings, applied=list(query.applied))
    ids, next_cursor, previous_cursor = _page(uow.session, query, scope, count)
    matches = uow.resources.by_surrogate_ids(ids)
    included: list[StoredVersion] = []
    if query.includes and matches:
        included, more = _includes(uow, query, scope, matches, include_limit)
        warnings.extend(more)
    log.debug("search %s in partition %s: %d matches", ",".join(types), uow.partition, len(matches))
    return SearchResult(matches, included, total, next_cursor, previous_cursor, warnings, list(query.applied))


def parse_cursor_or_fail(query: SearchQuery) -> None:
    """Check that a cursor is well-formed even when the partition is unknown (same answer as elsewhere)."""
    row = aliased(ResourceRow)
    assert query.cursor is not None
    decode_cursor(query.cursor, order_columns(row, query.sort, Scope(0)))
