"""Object storage for bulk files: a small Protocol, the S3 implementation (boto3) and an in-memory one."""

from __future__ import annotations

from storage.objectstore.base import (
    MIN_PART_SIZE,
    NDJSON,
    ObjectInfo,
    ObjectStore,
    ObjectWriter,
    WrittenFile,
    job_prefix,
    ndjson_key,
)
from storage.objectstore.memory import MemoryObjectStore
from storage.objectstore.multipart import S3Writer
from storage.objectstore.rolling import RollingNdjsonWriter
from storage.objectstore.s3 import S3ObjectStore, object_store_from_settings, s3_client

__all__ = [
    "MIN_PART_SIZE",
    "NDJSON",
    "MemoryObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "ObjectWriter",
    "RollingNdjsonWriter",
    "S3ObjectStore",
    "S3Writer",
    "WrittenFile",
    "job_prefix",
    "ndjson_key",
    "object_store_from_settings",
    "s3_client",
]
