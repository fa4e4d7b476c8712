"""Search indexing and search queries over the side tables (token, string, date, ...)."""

from __future__ import annotations

from storage.search.execute import SearchResult, query_pairs, search
from storage.search.index import (
    IndexRows,
    index_resource,
    index_rows_for,
    unindex_resource,
    unindex_resources,
    write_index_rows,
)
from storage.search.matching import (
    compartment_members,
    find_matching,
    lock_condition,
    matching_surrogate_ids,
    select_surrogate_ids,
)
from storage.search.query import SearchQuery, parse_search
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
    "SearchQuery",
    "SearchRegistry",
    "SearchResult",
    "builtin_registry",
    "compartment_members",
    "find_matching",
    "index_resource",
    "index_rows_for",
    "lock_condition",
    "matching_surrogate_ids",
    "parameters_for",
    "parse_search",
    "query_pairs",
    "register_custom_source",
    "registry_for",
    "search",
    "select_surrogate_ids",
    "unindex_resource",
    "unindex_resources",
    "write_index_rows",
]
