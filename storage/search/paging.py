"""Sort order and keyset paging of search results.

Pages are cut by keyset, not offset: a page ends at the sort key of its last row, and the ``next`` cursor
asks for rows strictly after that key (``previous``: strictly before its first row). The order always ends
with the surrogate id, so it is total and deterministic. Rows inserted or deleted elsewhere in the result
never shift a page boundary: a client paging through never sees a row twice nor misses one that did not
change meanwhile (a resource updated meanwhile gets a new surrogate id and may move). The cursor is opaque
to clients (base64url JSON of the key values) and only ever compared inside the caller's partition.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, false, func, literal, or_, select

from core.errors import InvalidRequest
from core.urlvalues import MAX_BIGINT
from storage.search.criteria import Scope
from storage.search.query import SortKey
from storage.search.tables import INDEX_TABLES
from storage.search.values import holds_number


@dataclass(frozen=True)
class OrderColumn:
    """One column of the result order: an expression, its direction, and how its cursor value is typed."""

    expr: Any
    descending: bool
    kind: str  # "text", "date", "number", "int", "flag"


def _sort_value(row: Any, key: SortKey, scope: Scope) -> tuple[Any, str]:
    if key.code == "_id":
        return row.resource_id, "text"
    if key.code == "_lastUpdated":
        return row.last_updated, "date"
    table = INDEX_TABLES[key.type].alias()
    agg = func.max if key.descending else func.min
    kind = "text"
    if key.type == "string":
        col: Any = table.c.value_norm
    elif key.type == "token":
        col = table.c.code
    elif key.type == "uri":
        col = table.c.value
    elif key.type == "reference":
        col = func.coalesce(table.c.target_type + "/" + table.c.target_id, table.c.url)
    else:
        col = table.c.high if key.descending else table.c.low
        kind = "date" if key.type == "date" else "number"
    value = (
        select(agg(col))
        .where(
            table.c.surrogate_id == row.surrogate_id,
            table.c.partition_id == scope.partition_id,
            table.c.param == key.code,
        )
        .scalar_subquery()
    )
    return value, kind


def order_columns(row: Any, sort: tuple[SortKey, ...], scope: Scope) -> list[OrderColumn]:
    """Return the full result order: each sort key (missing values last), then the surrogate id."""
    columns: list[OrderColumn] = []
    for key in sort:
        value, kind = _sort_value(row, key, scope)
        if key.code in {"_id", "_lastUpdated"}:
            columns.append(OrderColumn(value, key.descending, kind))
        else:
            columns.append(OrderColumn(value.is_(None), False, "flag"))
            columns.append(OrderColumn(value, key.descending, kind))
    columns.append(OrderColumn(row.surrogate_id, False, "int"))
    return columns


def order_by(columns: list[OrderColumn], *, reverse: bool = False) -> list[Any]:
    """Return ORDER BY clauses for the columns (all directions flipped when ``reverse``)."""
    return [c.expr.desc() if c.descending != reverse else c.expr.asc() for c in columns]


def keyset(columns: list[OrderColumn], values: list[Any], *, before: bool) -> ColumnElement[bool]:
    """Return the condition for rows strictly after (or ``before``) the row whose key is ``values``."""
    branches = []
    equal: list[ColumnElement[bool]] = []
    for column, value in zip(columns, values, strict=True):
        if value is None:
            # Every row here has NULL too (the flag column before it said so): nothing is beyond it.
            equal.append(column.expr.is_(None))
            continue
        forward = column.descending == before
        bound = literal(value, Boolean) if column.kind == "flag" else value
        beyond = column.expr > bound if forward else column.expr < bound
        branches.append(and_(*equal, beyond))
        equal.append(column.expr == bound)
    return or_(*branches) if branches else false()


def _dump(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def encode_cursor(direction: str, values: list[Any]) -> str:
    """Return the opaque cursor for the row with key ``values`` (``direction`` "n" after, "p" before)."""
    data = json.dumps([direction, [_dump(v) for v in values]], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _load(kind: str, value: Any) -> Any:
    """Return a cursor value as its column's type, or raise ValueError for one no row of ours could have.

    A cursor is the client's to send back, so it is checked like any input: integers fit a bigint, text is
    UTF-8 without NUL (no lone surrogates), numbers are finite and within what the index holds.
    """
    if value is None:
        return None
    if kind == "flag" and isinstance(value, bool):
        return value
    if kind == "int" and type(value) is int and -MAX_BIGINT - 1 <= value <= MAX_BIGINT:
        return value
    if kind == "text" and isinstance(value, str) and "\x00" not in value:
        value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
        return value
    if kind == "date" and isinstance(value, str):
        found = datetime.fromisoformat(value)
        if found.tzinfo is not None:
            return found
    if kind == "number" and isinstance(value, str):
        number = Decimal(value)
        if holds_number(number):
            return number
    raise ValueError(kind)


def decode_cursor(cursor: str, columns: list[OrderColumn]) -> tuple[bool, list[Any]]:
    """Return (before, key values) from a cursor made for the same order, or raise InvalidRequest."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        direction, values = json.loads(raw)
        if direction not in {"n", "p"} or not isinstance(values, list) or len(values) != len(columns):
            raise ValueError("shape")
        loaded = [_load(c.kind, v) for c, v in zip(columns, values, strict=True)]
    except (ValueError, TypeError, InvalidOperation, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("_cursor is not a cursor of this search (was _sort changed?)") from None
    if loaded[-1] is None:
        raise InvalidRequest("_cursor is not a cursor of this search")
    return direction == "p", loaded


def key_of(row: Any, width: int) -> list[Any]:
    """Return the key values of a result row (its trailing ``width`` columns)."""
    return list(row[len(row) - width :])
