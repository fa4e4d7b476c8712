"""Write and remove the search-index rows of one resource version."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def index_resource(
    session: Session, partition_id: int, resource_type: str, surrogate_id: int, resource: dict[str, Any]
) -> None:
    """Write the search-index rows of a current resource version."""
    # Filled in by the search module: extraction of every R4 SearchParameter of ``resource_type``.


def unindex_resource(session: Session, surrogate_id: int) -> None:
    """Remove the search-index rows of a version that is no longer current."""
