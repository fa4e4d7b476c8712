"""Storage: PostgreSQL (SQLAlchemy 2 + psycopg 3), migrations, search indexes and object storage."""

from __future__ import annotations

# Importing custom_params registers the partitions' own SearchParameters with the search registry. Every
# process that uses storage needs that (worker processes import nothing else that would): without it, a
# worker's reindex, import or bulk update indexed none of them.
from storage import custom_params as _custom_params  # noqa: F401
from storage.bulkwrite import BulkResult, NewResource, stamp_new, write_new_resources
from storage.database import Database
from storage.repository import PartitionInfo, ResourceRepository
from storage.search.index import StaleIndexRows
from storage.search.prepared import PreparedIndex, prepare_index
from storage.uow import UnitOfWork
from storage.versions import StoredVersion

__all__ = [
    "BulkResult",
    "Database",
    "NewResource",
    "PartitionInfo",
    "PreparedIndex",
    "ResourceRepository",
    "StaleIndexRows",
    "StoredVersion",
    "UnitOfWork",
    "prepare_index",
    "stamp_new",
    "write_new_resources",
]
