"""Stored versions as the layers above see them, and the narrow views of a unit of work that search needs.

A leaf module: the repository, the unit of work and the search package all import it, and it imports none
of them, so search can be written against a unit of work without importing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class StoredVersion:
    """One stored version of a resource, with the raw JSON bytes as stored."""

    surrogate_id: int
    resource_type: str
    resource_id: str
    version: int
    last_updated: datetime
    deleted: bool
    raw: bytes | None


class VersionReader(Protocol):
    """What search reads of a partition's resources (the repository of a unit of work)."""

    def partition_id(self, *, create: bool = False) -> int | None:
        """Return the partition's integer id (None when it does not exist)."""
        ...

    def by_surrogate_ids(self, surrogate_ids: list[int]) -> list[StoredVersion]:
        """Return the versions with these surrogate ids, in that order."""
        ...


class PartitionSession(Protocol):
    """A unit of work as search uses it: one transaction in one partition."""

    partition: str

    @property
    def session(self) -> Session:
        """Return the transaction's session."""
        ...

    @property
    def resources(self) -> VersionReader:
        """Return the partition's resources."""
        ...


class UnitsOfWork(Protocol):
    """Something that opens units of work in a partition (the Database)."""

    engine: Engine

    def unit_of_work(self, partition: str) -> Any:
        """Return a unit of work scoped to ``partition``."""
        ...


__all__ = ["PartitionSession", "StoredVersion", "UnitsOfWork", "VersionReader"]
