"""The search-index side tables (created by migration 0002).

Every row carries the partition id, the resource type, the parameter code and the surrogate id of the
current, live resource version it indexes, followed by the values of its parameter type. The main index of
each table starts with (partition_id, resource_type, param, value...), so that every search stays inside one
partition's slice of the index; a second index on surrogate_id serves removal, sorting and ``:missing``.
Text columns that are searched by prefix use the "C" collation, so that ``LIKE 'abc%'`` uses the index.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, Numeric, String, Table, Text

from storage.models import Base

_metadata = Base.metadata


def _head() -> list[Column[object]]:
    return [
        Column("partition_id", Integer, nullable=False),
        Column("resource_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        Column("surrogate_id", BigInteger, nullable=False),
    ]


string_index = Table(
    "search_string",
    _metadata,
    *_head(),
    Column("value_norm", Text(collation="C"), nullable=False),
    Column("value_exact", Text, nullable=False),
)
token_index = Table(
    "search_token",
    _metadata,
    *_head(),
    Column("system", Text(collation="C")),
    Column("code", Text(collation="C")),
    Column("text", Text(collation="C")),
)
date_index = Table(
    "search_date",
    _metadata,
    *_head(),
    Column("low", DateTime(timezone=True), nullable=False),
    Column("high", DateTime(timezone=True), nullable=False),
)
reference_index = Table(
    "search_reference",
    _metadata,
    *_head(),
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", Text(collation="C")),
)
number_index = Table(
    "search_number",
    _metadata,
    *_head(),
    Column("low", Numeric, nullable=False),
    Column("high", Numeric, nullable=False),
)
quantity_index = Table(
    "search_quantity",
    _metadata,
    *_head(),
    Column("system", Text(collation="C")),
    Column("code", Text(collation="C")),
    Column("unit", Text(collation="C")),
    Column("low", Numeric, nullable=False),
    Column("high", Numeric, nullable=False),
)
uri_index = Table(
    "search_uri",
    _metadata,
    *_head(),
    Column("value", Text(collation="C"), nullable=False),
)

INDEX_TABLES: dict[str, Table] = {
    "string": string_index,
    "token": token_index,
    "date": date_index,
    "reference": reference_index,
    "number": number_index,
    "quantity": quantity_index,
    "uri": uri_index,
}
