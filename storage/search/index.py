"""Write and remove the search-index rows of resource versions.

``index_rows_for`` extracts the rows of one resource (pure Python, no I/O); ``write_index_rows`` writes the
rows of one or many resources: one statement (data-modifying CTEs, one per side table) for small batches,
``COPY`` through session-local staging tables (``storage/staging.py``: row-level security refuses COPY into
the side tables themselves) for large ones. ``index_resource`` / ``unindex_resource`` are what the
repository calls on every write; a REST write extracts its rows before its transaction opens
(``storage/search/prepared.py``) and ``index_resource`` only writes them.

Extraction sees the resource's content: ``meta.versionId`` and ``meta.lastUpdated``, which the server sets
inside the write's transaction, are left out (``_lastUpdated`` is a column of the resource table), so the
rows extracted before a write, during it and by a later ``$reindex`` are the same. A partition's own
parameters outside the compiled subset run within budgets (``core/fhirpath_limits.py``): one that runs
past its budget on a resource is not indexed for that resource, and ``IndexRows.skipped`` counts it.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from core.errors import Conflict
from core.fhirpath_guard import TooCostly, evaluation_budget
from core.fhirpath_limits import PER_RESOURCE_SECONDS
from storage.search.fhirpath import Accessor, Compiled, Item, Step
from storage.search.registry import SearchRegistry, builtin_registry, registry_for
from storage.search.tables import INDEX_TABLES
from storage.search.values import CONVERTERS, Converter
from storage.staging import ensure_stages, insert_rows

log = logging.getLogger(__name__)
_COPY_ABOVE_PARAMS = 20_000
_COLUMNS: dict[str, list[str]] = {
    kind: [c.name for c in table.columns] for kind, table in INDEX_TABLES.items()
}


class _Entry:
    """One ``|`` branch of a type's plan and the parameter codes (same branch, same type) it feeds."""

    __slots__ = ("accessor", "bounded", "codes", "convert", "ftype", "keys", "kind", "rest")

    def __init__(self, codes: list[str], kind: str, branch: Compiled):
        self.codes = tuple(codes)
        self.bounded = branch.mode == "fhirpathpy"
        self.kind = kind
        self.convert: Converter = CONVERTERS[kind]
        self.accessor: Accessor | None = branch.accessor
        self.keys = branch.keys
        self.ftype = branch.prefix_type
        self.rest: Step | None = branch.rest


class _Node:
    """A node of a type's key trie: the branches ending here, and the keys read below."""

    __slots__ = ("children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entries: list[_Entry] = []


class _Plan:
    """What to extract from resources of one type.

    Branches that start with plain keys hang in a trie, so a shared prefix (``address`` for address-city and
    address-state) is read once; the others (``loose``) run on the whole resource when one of their first
    keys is present.
    """

    def __init__(self, registry: SearchRegistry, rtype: str):
        grouped: dict[tuple[str, str, int], tuple[Compiled, list[str]]] = {}
        for code, param in sorted(registry.for_type(rtype).items()):
            if not param.indexed:
                continue
            for branch in param.branches:
                # Branches with the same text and parameter type (name / phonetic, code / combo-code) are
                # evaluated once; fallback accessors are never shared.
                key = (branch.text, param.type, 0 if branch.mode == "compiled" else id(branch))
                grouped.setdefault(key, (branch, []))[1].append(code)
        self.root = _Node()
        self.loose: list[_Entry] = []
        for (_, kind, _), (branch, codes) in grouped.items():
            entry = _Entry(codes, kind, branch)
            if not branch.prefix:
                self.loose.append(entry)
                continue
            node = self.root
            for k in branch.prefix:
                node = node.children.setdefault(k, _Node())
            node.entries.append(entry)
        # Branches outside the compiled subset (only ever loose) run within the per-resource budget.
        self.bounded = any(e.bounded for e in self.loose)


_plans: weakref.WeakKeyDictionary[SearchRegistry, dict[str, _Plan]] = weakref.WeakKeyDictionary()


class IndexRows:
    """Index rows by side table; a row is (partition_id, resource_type, param, surrogate_id, values...).

    ``skipped`` counts, by parameter code, the resources a parameter was not indexed for because its
    evaluation ran past its budget.
    """

    def __init__(self) -> None:
        self.by_table: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in INDEX_TABLES}
        self.skipped: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.by_table.values())

    def extend(self, other: IndexRows) -> None:
        """Add the rows (and the skips) of ``other``."""
        for kind, rows in other.by_table.items():
            self.by_table[kind].extend(rows)
        self.skipped.update(other.skipped)

    def bound(self, partition_id: int, surrogate_id: int) -> IndexRows:
        """Return these rows (extracted for one resource) with its partition and surrogate id put in."""
        out = IndexRows()
        for kind, rows in self.by_table.items():
            out.by_table[kind] = [(partition_id, r[1], r[2], surrogate_id, *r[4:]) for r in rows]
        out.skipped = Counter(self.skipped)
        return out


def _plan(registry: SearchRegistry, rtype: str) -> _Plan:
    per_type = _plans.get(registry)
    if per_type is None:
        per_type = _plans[registry] = {}
    plan = per_type.get(rtype)
    if plan is None:
        plan = per_type[rtype] = _Plan(registry, rtype)
    return plan


_ERRORS = (TypeError, AttributeError, ValueError, KeyError, IndexError)
Found = list[tuple[_Entry, list[Item]]]
#: Members of ``meta`` the server sets inside the write's transaction: not part of what is indexed.
_SERVER_META = frozenset({"versionId", "lastUpdated"})


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """Return ``resource`` without the ``meta`` members the server sets (a shallow copy if it has any)."""
    meta = resource.get("meta")
    if type(meta) is dict and not _SERVER_META.isdisjoint(meta):
        return {**resource, "meta": {k: v for k, v in meta.items() if k not in _SERVER_META}}
    return resource


def _loose(
    plan: _Plan, resource: dict[str, Any], found: Found, skipped: Counter[str], *, bounded: bool = True
) -> None:
    """Run the branches that start anywhere but a plain key (each bounded one within its budgets; with
    ``bounded`` false, those are skipped)."""
    for entry in plan.loose:
        if entry.keys is not None and entry.keys.isdisjoint(resource):
            continue
        if entry.bounded and not bounded:
            skipped.update(entry.codes)
            continue
        try:
            items = entry.accessor(resource) if entry.accessor is not None else []
        except _ERRORS:
            items = []
        except TooCostly:
            skipped.update(entry.codes)
            continue
        if items:
            found.append((entry, items))


def _flat(x: Any) -> list[Any]:
    return x if type(x) is list else [x]


def _walk(node: _Node, values: list[Any], found: Found) -> None:
    for entry in node.entries:
        ftype = entry.ftype
        items = [(v, ftype) for v in values]
        if entry.rest is not None:
            try:
                items = entry.rest(items)
            except _ERRORS:
                continue
        if items:
            found.append((entry, items))
    for key, child in node.children.items():
        below: list[Any] = []
        for v in values:
            if type(v) is dict:
                x = v.get(key)
                if x is not None:
                    if type(x) is list:
                        below.extend(x)
                    else:
                        below.append(x)
        if below:
            _walk(child, below, found)


def index_rows_for(
    rtype: str,
    surrogate_id: int,
    partition_id: int,
    resource: dict[str, Any],
    *,
    registry: SearchRegistry | None = None,
    into: IndexRows | None = None,
) -> IndexRows:
    """Return the index rows of one resource version (appended to ``into`` when given)."""
    rows = into if into is not None else IndexRows()
    tables = rows.by_table
    plan = _plan(registry or builtin_registry(), rtype)
    resource = _content(resource)
    found: Found = []
    children = plan.root.children
    for key, value in resource.items():
        child = children.get(key)
        if child is not None and value is not None:
            _walk(child, _flat(value), found)
    if not plan.bounded:
        _loose(plan, resource, found, rows.skipped)
    else:
        before = len(found)
        try:
            with evaluation_budget(PER_RESOURCE_SECONDS):
                _loose(plan, resource, found, rows.skipped)
        except TooCostly:  # an enclosing budget (the transaction's) is spent: no fhirpathpy for this one
            del found[before:]
            _loose(plan, resource, found, rows.skipped, bounded=False)
    for entry, items in found:
        try:
            values = entry.convert(items)
        except _ERRORS as exc:
            log.warning("%s/%s: %s not indexed: %s", rtype, resource.get("id"), ",".join(entry.codes), exc)
            continue
        if values:
            target = tables[entry.kind]
            for code in entry.codes:
                target.extend([(partition_id, rtype, code, surrogate_id, *v) for v in values])
    return rows


class StaleIndexRows(Conflict):
    """Rows extracted ahead of a write came from a registry the partition no longer has (a ``$reindex``
    changed its parameters meanwhile); the write is rolled back, to be tried again."""

    def __init__(self, registry: SearchRegistry):
        super().__init__("The partition's search parameters changed during this write; try again")
        self.registry = registry


def _driver_connection(session: Session) -> Any:
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return conn


def write_index_rows(session: Session, rows: IndexRows | Iterable[IndexRows]) -> int:
    """Write index rows in the session's transaction; return how many were written."""
    if not isinstance(rows, IndexRows):
        merged = IndexRows()
        for part in rows:
            merged.extend(part)
        rows = merged
    present = {kind: batch for kind, batch in rows.by_table.items() if batch}
    if not present:
        return 0
    params = sum(len(batch) * len(_COLUMNS[kind]) for kind, batch in present.items())
    conn = _driver_connection(session)
    with conn.cursor() as cur:
        if params <= _COPY_ABOVE_PARAMS:
            statements: list[str] = []
            args: list[Any] = []
            for kind, batch in present.items():
                cols = _COLUMNS[kind]
                one = "(" + ",".join(["%s"] * len(cols)) + ")"
                sql = f"INSERT INTO {INDEX_TABLES[kind].name} ({','.join(cols)}) VALUES " + ",".join(
                    [one] * len(batch)
                )
                statements.append(sql)
                for row in batch:
                    args.extend(row)
            if len(statements) == 1:
                cur.execute(statements[0], args)
            else:
                ctes = ", ".join(f"w{i} AS ({s})" for i, s in enumerate(statements[:-1]))
                cur.execute(f"WITH {ctes} {statements[-1]}", args)
        else:
            # COPY straight into a table under row-level security is refused: go through staging tables.
            ensure_stages(cur, [INDEX_TABLES[kind].name for kind in present])
            for kind, batch in present.items():
                insert_rows(cur, INDEX_TABLES[kind].name, _COLUMNS[kind], batch)
    return len(rows)


def _delete_sql(condition: str) -> str:
    tables = [t.name for t in INDEX_TABLES.values()]
    ctes = ", ".join(f"d{i} AS (DELETE FROM {t} WHERE {condition})" for i, t in enumerate(tables[:-1]))
    return f"WITH {ctes} DELETE FROM {tables[-1]} WHERE {condition}"


_DELETE_ONE = _delete_sql("surrogate_id = %(sid)s")
_DELETE_MANY = _delete_sql("surrogate_id = ANY(%(sids)s)")


def unindex_resources(session: Session, surrogate_ids: Sequence[int]) -> None:
    """Remove the index rows of these versions (one statement over every side table)."""
    if not surrogate_ids:
        return
    with _driver_connection(session).cursor() as cur:
        if len(surrogate_ids) == 1:
            cur.execute(_DELETE_ONE, {"sid": surrogate_ids[0]})
        else:
            cur.execute(_DELETE_MANY, {"sids": list(surrogate_ids)})


def index_resource(
    session: Session,
    partition_id: int,
    resource_type: str,
    surrogate_id: int,
    resource: dict[str, Any],
    *,
    ahead: tuple[SearchRegistry, IndexRows] | None = None,
) -> tuple[SearchRegistry, IndexRows]:
    """Write the search-index rows of a current resource version; return the registry and rows used.

    ``ahead`` holds rows extracted before the transaction and the registry they were extracted with: they
    are written when that is still the partition's registry (read here, after the version was inserted,
    so that a ``$reindex`` planned meanwhile waits for this transaction); otherwise ``StaleIndexRows``
    is raised (the caller extracts again, outside a transaction). Without ``ahead`` the rows are
    extracted here, within the evaluation budgets.
    """
    registry = registry_for(session, partition_id)
    if ahead is not None:
        if ahead[0] is not registry:
            raise StaleIndexRows(registry)
        rows = ahead[1].bound(partition_id, surrogate_id)
    else:
        rows = index_rows_for(resource_type, surrogate_id, partition_id, resource, registry=registry)
    write_index_rows(session, rows)
    return registry, rows


def unindex_resource(session: Session, surrogate_id: int) -> None:
    """Remove the search-index rows of a version that is no longer current."""
    unindex_resources(session, [surrogate_id])
