"""Shared types of Bulkhead: settings, partition names, job enums and the error tree."""

from __future__ import annotations

from core.errors import (
    BulkheadError,
    Conflict,
    Forbidden,
    Gone,
    InvalidRequest,
    Issue,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
    UnsupportedMediaType,
)
from core.partition import DEFAULT_PARTITION, RESERVED_PARTITION_NAMES, validate_partition_name
from core.settings import Settings

__all__ = [
    "DEFAULT_PARTITION",
    "RESERVED_PARTITION_NAMES",
    "BulkheadError",
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidRequest",
    "Issue",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServiceUnavailable",
    "Settings",
    "TooManyRequests",
    "Unprocessable",
    "UnsupportedMediaType",
    "validate_partition_name",
]
