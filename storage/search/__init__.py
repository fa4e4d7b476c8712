"""Search indexing and search queries over the side tables (token, string, date, ...)."""

from __future__ import annotations

from storage.search.index import index_resource, unindex_resource

__all__ = ["index_resource", "unindex_resource"]
