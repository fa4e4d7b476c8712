"""A partition's own search parameters: its SearchParameter resources, indexed by Bulkhead.

A SearchParameter resource stored in a partition changes nothing by itself. ``$reindex`` of the partition
reads them (``refresh``): each valid one is recorded in ``custom_search_param`` as ``reindexing`` — from then
on every write of the partition indexes it (the search registry's custom source, ``custom_parameters``, is
read in the writer's own transaction, so there is no stale cache) — and, once the reindex has covered every
existing resource and its count check passed, ``activate`` makes it ``active``: searchable, and listed in the
partition's CapabilityStatement. Definitions of other partitions are never read: the table is under the
partition policy like every tenant table, and every query names the partition.

A SearchParameter is used when its status is not ``retired``, it has a ``url``, a ``code`` (not starting with
``_``), a ``type`` Bulkhead indexes (string, token, date, reference, number, quantity, uri), resource types
in ``base`` and an ``expression`` within the limits of ``core/fhirpath_limits.py`` (a write refuses one
that is not, with 422; one stored before the limits existed is rejected here) that applies to at least one
of them. Others are reported and skipped.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.fhirpath_limits import expression_problems
from core.fhirtypes import resource_types
from storage.search.fhirpath import compile_expression
from storage.search.registry import INDEXED_TYPES, SearchParameterDef, register_custom_source
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")
_ABSTRACT = frozenset({"Resource", "DomainResource"})


@dataclass
class Refresh:
    """What ``refresh`` found: parameters to reindex, unchanged ones, removed ones and rejected resources."""

    reindexing: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class CustomParameter:
    """A partition's search parameter as the CapabilityStatement lists it."""

    code: str
    url: str
    type: str
    base: tuple[str, ...]
    status: str
    expression: str | None


def definition_of(resource: dict[str, Any]) -> dict[str, Any]:
    """Return the definition Bulkhead stores for a SearchParameter resource; raise ValueError if unusable."""
    if resource.get("status") == "retired":
        raise ValueError("it is retired")
    code, url, ptype = resource.get("code"), resource.get("url"), resource.get("type")
    if not isinstance(url, str) or not url:
        raise ValueError("it has no url")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise ValueError(f"its code {code!r} is not usable (letters, digits, '-', '_', '.'; no leading '_')")
    if ptype not in INDEXED_TYPES:
        raise ValueError(
            f"its type {ptype!r} is not one Bulkhead indexes ({', '.join(sorted(INDEXED_TYPES))})"
        )
    base = resource.get("base")
    known = resource_types() | _ABSTRACT
    if not isinstance(base, list) or not base or not all(isinstance(b, str) and b in known for b in base):
        raise ValueError(f"its base {base!r} does not list R4 resource types")
    expression = resource.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("it has no FHIRPath expression")
    problems = expression_problems(expression)
    if problems:
        raise ValueError(f"its expression is refused: {'; '.join(problems)}")
    concrete = sorted(resource_types()) if set(base) & _ABSTRACT else base
    if not any(compile_expression(expression, rtype).accessor is not None for rtype in concrete):
        raise ValueError(f"its expression {expression!r} applies to none of {', '.join(base)}")
    definition: dict[str, Any] = {
        "code": code,
        "url": url,
        "type": ptype,
        "base": base,
        "expression": expression,
    }
    for key in ("target", "modifier", "comparator"):
        if isinstance(resource.get(key), list):
            definition[key] = [str(v) for v in resource[key]]
    return definition


def _hash(definition: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


def refresh(uow: UnitOfWork, group_id: str) -> Refresh:
    """Record the partition's current SearchParameter resources; new or changed ones become ``reindexing``."""
    out = Refresh()
    pid = uow.resources.partition_id()
    if pid is None:
        return out
    session = uow.session
    stored = {
        row[0]: (row[1], row[2], row[3])
        for row in session.execute(
            text(
                "SELECT resource_id, definition_hash, status, code FROM custom_search_param"
                " WHERE partition_id = :p"
            ),
            {"p": pid},
        )
    }
    resources = session.execute(
        text(
            "SELECT resource_id, raw FROM resource WHERE partition_id = :p"
            " AND resource_type = 'SearchParameter' AND NOT is_history AND NOT is_deleted"
            " ORDER BY resource_id"
        ),
        {"p": pid},
    ).all()
    seen: set[str] = set()
    for rid, raw in resources:
        try:
            definition = definition_of(orjson.loads(raw))
        except (ValueError, orjson.JSONDecodeError) as exc:
            out.rejected.append((rid, f"SearchParameter/{rid} is not used: {exc}"))
            continue
        seen.add(rid)
        digest = _hash(definition)
        previous = stored.get(rid)
        if previous is not None and previous[0] == digest and previous[1] == "active":
            out.unchanged.append(definition["code"])
            continue
        out.reindexing.append(definition["code"])
        session.execute(
            text(
                """
                INSERT INTO custom_search_param (partition_id, resource_id, url, code, definition,
                                                 definition_hash, status, reindex_job, updated_at)
                VALUES (:p, :rid, :url, :code, CAST(:d AS jsonb), :h, 'reindexing', :g, now())
                ON CONFLICT (partition_id, resource_id) DO UPDATE SET url = EXCLUDED.url,
                    code = EXCLUDED.code, definition = EXCLUDED.definition,
                    definition_hash = EXCLUDED.definition_hash,
                    status = 'reindexing', reindex_job = EXCLUDED.reindex_job, updated_at = now()
                """
            ),
            {
                "p": pid,
                "rid": rid,
                "url": definition["url"],
                "code": definition["code"],
                "d": orjson.dumps(definition).decode(),
                "h": digest,
                "g": group_id,
            },
        )
    gone = [rid for rid in stored if rid not in seen]
    if gone:
        session.execute(
            text("DELETE FROM custom_search_param WHERE partition_id = :p AND resource_id = ANY(:ids)"),
            {"p": pid, "ids": gone},
        )
        out.removed.extend(stored[rid][2] for rid in gone)
    return out


def activate(uow: UnitOfWork, group_id: str) -> list[str]:
    """Make the parameters a completed reindex covered searchable; return their codes."""
    pid = uow.resources.partition_id()
    if pid is None:
        return []
    rows = uow.session.execute(
        text(
            "UPDATE custom_search_param SET status = 'active', updated_at = now()"
            " WHERE partition_id = :p AND status = 'reindexing' AND reindex_job = :g RETURNING code"
        ),
        {"p": pid, "g": group_id},
    ).scalars()
    return sorted(rows)


def custom_parameters(session: Session, partition_id: int) -> Sequence[SearchParameterDef]:
    """Return a partition's own parameters for the search registry (``reindexing`` ones not searchable)."""
    rows = session.execute(
        text(
            "SELECT definition, status FROM custom_search_param WHERE partition_id = :p"
            " ORDER BY code, resource_id"
        ),
        {"p": partition_id},
    ).all()
    return tuple(replace(SearchParameterDef.from_json(row[0]), ready=row[1] == "active") for row in rows)


def list_custom(uow: UnitOfWork) -> list[CustomParameter]:
    """Return the partition's own parameters with their state (for the CapabilityStatement)."""
    pid = uow.resources.partition_id()
    if pid is None:
        return []
    rows = uow.session.execute(
        text("SELECT definition, status FROM custom_search_param WHERE partition_id = :p ORDER BY code"),
        {"p": pid},
    ).all()
    return [
        CustomParameter(d["code"], d["url"], d["type"], tuple(d["base"]), status, d.get("expression"))
        for d, status in rows
    ]


def install() -> None:
    """Plug the partitions' own parameters into the search registry (idempotent)."""
    register_custom_source(custom_parameters)


install()
