"""Partition names: the tenant boundary of Bulkhead."""

from __future__ import annotations

import re

from core.errors import InvalidRequest

DEFAULT_PARTITION = "default"
RESERVED_PARTITION_NAMES = frozenset({"system", "admin", "metadata"})
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def validate_partition_name(name: str) -> str:
    """Return ``name`` if it is a valid partition name, else raise InvalidRequest."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            "Invalid partition name: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '-' and '_'"
        )
    if name in {".", ".."}:
        raise InvalidRequest(f"Invalid partition name {name!r}")
    if name.lower() in RESERVED_PARTITION_NAMES:
        raise InvalidRequest(f"The partition name {name!r} is reserved")
    return name
