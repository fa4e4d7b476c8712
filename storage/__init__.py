"""Storage: PostgreSQL (SQLAlchemy 2 + psycopg 3), migrations, search indexes and object storage."""

from __future__ import annotations

from storage.bulkwrite import BulkResult, NewResource, stamp_new, write_new_resources
from storage.database import Database
from storage.repository import PartitionInfo, ResourceRepository, StoredVersion
from storage.uow import UnitOfWork

__all__ = [
    "BulkResult",
    "Database",
    "NewResource",
    "PartitionInfo",
    "ResourceRepository",
    "StoredVersion",
    "UnitOfWork",
    "stamp_new",
    "write_new_resources",
]
