"""Turn parsed criteria into SQL conditions on the resource table, always inside one partition.

Every condition is a semi-join on a side table restricted to ``partition_id``, ``resource_type`` and
``param``, so that rows of another partition can never match, whatever the values say. Chains and ``_has``
look up resources of the same partition only; an absolute reference counts as local only when it starts
with this partition's base URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, and_, exists, false, literal, not_, or_, select
from sqlalchemy.orm import aliased

from core.errors import InvalidRequest
from core.fhirdates import approximate
from core.fhirtypes import resource_types
from core.validation import ID_PATTERN
from storage.models import ResourceRow
from storage.search.query import PREFIXES, Criterion, unescape
from storage.search.tables import INDEX_TABLES, reference_index
from storage.search.values import (
    NUMBER_FINEST_EXPONENT,
    STRING_INDEX_CHARS,
    TOKEN_BYTES,
    URI_BYTES,
    clip,
    date_range,
    normalize,
)

_PIPE = re.compile(r"(?<!\\)\|")
_RELATIVE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[^/]+)(?:/_history/[^/]+)?")


@dataclass(frozen=True)
class Scope:
    """Where a search runs: the partition's integer id and its base URL (for absolute references)."""

    partition_id: int
    base: str | None = None


def live(row: Any, scope: Scope, rtype: str | None = None) -> list[ColumnElement[bool]]:
    """Return the conditions selecting current, live rows of the partition (and type)."""
    conds = [row.partition_id == scope.partition_id, row.is_history.is_(False), row.is_deleted.is_(False)]
    if rtype is not None:
        conds.append(row.resource_type == rtype)
    return conds


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def split_prefix(value: str) -> tuple[str, str]:
    """Split a comparison prefix (``ge2020``) from its value; ``eq`` when there is none."""
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "+-."):
        return value[:2], value[2:]
    return "eq", value


def search_date_range(text: str) -> tuple[datetime, datetime]:
    """Return the [low, high) range of a date search value or raise InvalidRequest."""
    found = date_range(text)
    if found is None:
        raise InvalidRequest(f"{text!r} is not a FHIR date, dateTime or instant")
    return found


def _date(prefix: str, text: str, low: ColumnElement[Any], high: ColumnElement[Any]) -> ColumnElement[bool]:
    slo, shi = search_date_range(text)
    if prefix == "eq":
        return and_(low >= slo, high <= shi)
    if prefix == "ne":
        return not_(and_(low >= slo, high <= shi))
    if prefix == "gt":
        return high > shi
    if prefix == "lt":
        return low < slo
    if prefix == "ge":
        return high > slo
    if prefix == "le":
        return low < shi
    if prefix == "sa":
        return low >= shi
    if prefix == "eb":
        return high <= slo
    wide_low, wide_high = approximate(slo, shi)
    return and_(low < wide_high, high > wide_low)


def _instant(prefix: str, text: str, point: ColumnElement[Any]) -> ColumnElement[bool]:
    """Compare a stored instant (``_lastUpdated``) with a date search value."""
    slo, shi = search_date_range(text)
    if prefix == "ap":
        wide_low, wide_high = approximate(slo, shi)
        return and_(point >= wide_low, point < wide_high)
    within = and_(point >= slo, point < shi)
    return {
        "eq": within,
        "ne": not_(within),
        "gt": point >= shi,
        "sa": point >= shi,
        "lt": point < slo,
        "eb": point < slo,
        "ge": point >= slo,
        "le": point < shi,
    }[prefix]


_NUMBER_BOUND = Decimal("1e22")  # beyond every indexed number: larger search values compare the same


def _bounded(value: Decimal) -> Decimal:
    return min(max(value, -_NUMBER_BOUND), _NUMBER_BOUND)


def number_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """Return (value, low, high): the value and the range its significant digits stand for.

    Values are bounded to what the index can hold: magnitudes beyond ``_NUMBER_BOUND`` compare as the bound
    (nothing indexed lies beyond it), and digits finer than ``NUMBER_FINEST_EXPONENT`` round away, so that
    a value with an exponent of a billion either way is a range like any other.
    """
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidRequest(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise InvalidRequest(f"{text!r} is not a finite number")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    finest = min(max(exponent, NUMBER_FINEST_EXPONENT), _NUMBER_BOUND.adjusted())
    half = Decimal(5).scaleb(finest - 1)
    if value and value.adjusted() < NUMBER_FINEST_EXPONENT:
        value = Decimal(0)
    value = _bounded(value)
    return value, _bounded(value - half), _bounded(value + half)


def _number(prefix: str, text: str, low: ColumnElement[Any], high: ColumnElement[Any]) -> ColumnElement[bool]:
    value, vlo, vhi = number_range(text)
    if prefix == "eq":
        return and_(low >= vlo, high < vhi)
    if prefix == "ne":
        return not_(and_(low >= vlo, high < vhi))
    if prefix == "ap":
        margin = abs(value) * Decimal("0.1")
        return and_(low <= value + margin, high >= value - margin)
    return {
        "gt": high > value,
        "lt": low < value,
        "ge": high >= value,
        "le": low <= value,
        "sa": low > value,
        "eb": high < value,
    }[prefix]


def _string(table: FromClause, modifier: str | None, value: str) -> ColumnElement[bool]:
    text = unescape(value)
    folded = normalize(text)[:STRING_INDEX_CHARS]
    if modifier == "exact":
        return and_(table.c.value_norm == folded, table.c.value_exact == text)
    if modifier == "contains":
        return table.c.value_norm.like(f"%{_like(folded)}%", escape="\\")
    return table.c.value_norm.like(f"{_like(folded)}%", escape="\\")


def _token(table: FromClause, modifier: str | None, value: str) -> ColumnElement[bool]:
    if modifier == "text":
        return table.c.text.like(f"{_like(normalize(unescape(value))[:STRING_INDEX_CHARS])}%", escape="\\")
    parts = _PIPE.split(value, maxsplit=1)
    if len(parts) == 1:
        return table.c.code == clip(unescape(value), TOKEN_BYTES)
    system, code = clip(unescape(parts[0]), TOKEN_BYTES), clip(unescape(parts[1]), TOKEN_BYTES)
    if not system and not code:
        raise InvalidRequest("A token search value needs a system or a code")
    if not system:
        return and_(table.c.system.is_(None), table.c.code == code)
    if not code:
        return table.c.system == system
    return and_(table.c.system == system, table.c.code == code)


def _quantity(table: FromClause, value: str) -> ColumnElement[bool]:
    parts = _PIPE.split(value)
    if len(parts) not in {1, 3}:
        raise InvalidRequest(f"{value!r} is not of the form [prefix]number[|system|code]")
    prefix, number = split_prefix(unescape(parts[0]))
    conds = [_number(prefix, number, table.c.low, table.c.high)]
    if len(parts) == 3:
        system, code = unescape(parts[1]), unescape(parts[2])
        if system:
            conds.append(table.c.system == system)
        if code:
            conds.append(table.c.code == code if system else or_(table.c.code == code, table.c.unit == code))
    return and_(*conds)


def _uri(table: FromClause, modifier: str | None, value: str) -> ColumnElement[bool]:
    text = clip(unescape(value), URI_BYTES)
    if modifier == "below":
        return table.c.value.like(f"{_like(text)}%", escape="\\")
    if modifier == "above":
        return and_(table.c.value <= text, literal(text).op("^@")(table.c.value))
    return table.c.value == text


def local_reference(ref: FromClause, scope: Scope) -> ColumnElement[bool]:
    """Return the condition that a reference row points into this partition (relative or own base URL)."""
    if scope.base is None:
        return ref.c.url.is_(None)
    own = literal(scope.base.rstrip("/") + "/") + ref.c.target_type + "/" + ref.c.target_id
    return or_(ref.c.url.is_(None), ref.c.url == own)


def _reference(table: FromClause, modifier: str | None, value: str, scope: Scope) -> ColumnElement[bool]:
    text = unescape(value)
    own = scope.base.rstrip("/") + "/" if scope.base else None
    if own and text.startswith(own):
        text = text[len(own) :]
    m = _RELATIVE.fullmatch(text)
    if m and m.group("type") in resource_types() and ID_PATTERN.fullmatch(m.group("id")):
        if modifier is not None and modifier != "missing" and modifier != m.group("type"):
            return false()
        return and_(
            table.c.target_type == m.group("type"),
            table.c.target_id == m.group("id"),
            local_reference(table, scope),
        )
    if "://" in text or text.startswith(("urn:", "http:", "https:")):
        return table.c.url == clip(text.split("|", 1)[0], URI_BYTES)
    if ID_PATTERN.fullmatch(text):
        conds = [table.c.target_id == text, local_reference(table, scope)]
        if modifier is not None:
            conds.append(table.c.target_type == modifier)
        return and_(*conds)
    raise InvalidRequest(f"{value!r} is not a reference (Type/id, id or an absolute URL)")


def _value_condition(table: FromClause, c: Criterion, value: str, scope: Scope) -> ColumnElement[bool]:
    if c.type == "string":
        return _string(table, c.modifier, value)
    if c.type == "token":
        return _token(table, c.modifier, value)
    if c.type == "date":
        prefix, text = split_prefix(value)
        return _date(prefix, text, table.c.low, table.c.high)
    if c.type == "number":
        prefix, text = split_prefix(value)
        return _number(prefix, text, table.c.low, table.c.high)
    if c.type == "quantity":
        return _quantity(table, value)
    if c.type == "uri":
        return _uri(table, c.modifier, value)
    if c.type == "reference":
        return _reference(table, c.modifier, value, scope)
    raise InvalidRequest(f"Search parameters of type {c.type} are not supported")


def _side(
    table: FromClause, scope: Scope, rtype: str | None, code: str, *conds: ColumnElement[bool]
) -> Select[Any]:
    """Select the surrogate ids of index rows of the partition (and type, unless a system search)."""
    where = [table.c.partition_id == scope.partition_id, table.c.param == code, *conds]
    if rtype is not None:
        where.append(table.c.resource_type == rtype)
    return select(table.c.surrogate_id).where(*where)


def _resource_column(row: Any, c: Criterion) -> ColumnElement[bool]:
    values = [unescape(v) for v in c.values]
    if c.code == "_id":
        cond: ColumnElement[bool] = (
            row.resource_id.not_in(values) if c.modifier == "not" else row.resource_id.in_(values)
        )
        return cond
    return or_(*(_instant(*split_prefix(v), row.last_updated) for v in c.values))


def _chained(row: Any, c: Criterion, rtype: str | None, scope: Scope) -> ColumnElement[bool]:
    ref = reference_index.alias()
    per_type = []
    for target, inner in zip(c.targets, c.chain, strict=True):
        other = aliased(ResourceRow)
        ids = select(other.resource_id).where(
            *live(other, scope, target), *conditions(other, target, [inner], scope)
        )
        per_type.append(and_(ref.c.target_type == target, ref.c.target_id.in_(ids)))
    cond: ColumnElement[bool] = row.surrogate_id.in_(
        _side(ref, scope, rtype, c.code, local_reference(ref, scope), or_(*per_type))
    )
    return cond


def _reverse_chained(row: Any, c: Criterion, rtype: str | None, scope: Scope) -> ColumnElement[bool]:
    assert c.has is not None and rtype is not None
    source, ref_code, inner = c.has
    ref = reference_index.alias()
    other = aliased(ResourceRow)
    sources = select(other.surrogate_id).where(
        *live(other, scope, source), *conditions(other, source, [inner], scope)
    )
    targets = select(ref.c.target_id).where(
        ref.c.partition_id == scope.partition_id,
        ref.c.resource_type == source,
        ref.c.param == ref_code,
        ref.c.target_type == rtype,
        local_reference(ref, scope),
        ref.c.surrogate_id.in_(sources),
    )
    cond: ColumnElement[bool] = row.resource_id.in_(targets)
    return cond


def conditions(row: Any, rtype: str | None, criteria: Any, scope: Scope) -> list[ColumnElement[bool]]:
    """Return the SQL conditions (AND-ed) that ``criteria`` put on ``row`` (a resource-table entity).

    ``rtype`` None is a system search: side tables are then joined on surrogate id and partition only.
    """
    out: list[ColumnElement[bool]] = []
    for c in criteria:
        if c.has is not None:
            out.append(_reverse_chained(row, c, rtype, scope))
            continue
        if c.chain:
            out.append(_chained(row, c, rtype, scope))
            continue
        if c.param is None:
            out.append(_resource_column(row, c))
            continue
        table = INDEX_TABLES[c.type].alias()
        if c.modifier == "missing":
            present = exists(
                select(1)
                .select_from(table)
                .where(
                    table.c.surrogate_id == row.surrogate_id,
                    table.c.partition_id == scope.partition_id,
                    table.c.param == c.code,
                )
            )
            out.append(not_(present) if c.values[0] == "true" else present)
            continue
        matched = or_(*(_value_condition(table, c, v, scope) for v in c.values))
        if c.modifier == "not":
            out.append(row.surrogate_id.not_in(_side(table, scope, rtype, c.code, matched)))
        else:
            out.append(row.surrogate_id.in_(_side(table, scope, rtype, c.code, matched)))
    return out
