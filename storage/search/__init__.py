"""Search indexing and search queries over the side tables (token, string, date, ...)."""

from __future__ import annotations

from storage.search.index import (
    IndexRows,
    index_resource,
    index_rows_for,
    unindex_resource,
    unindex_resources,
    write_index_rows,
)
from storage.search.registry import (
    BoundParameter,
    SearchParameterDef,
    SearchRegistry,
    builtin_registry,
    parameters_for,
    register_custom_source,
    registry_for,
)

__all__ = [
    "BoundParameter",
    "IndexRows",
    "SearchParameterDef",
    "SearchRegistry",
    "builtin_registry",
    "index_resource",
    "index_rows_for",
    "parameters_for",
    "register_custom_source",
    "registry_for",
    "unindex_resource",
    "unindex_resources",
    "write_index_rows",
]
