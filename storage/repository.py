"""The resource repository: versions of resources in one partition."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.urlvalues import MAX_VERSION
from storage.instants import write_instant
from storage.models import PartitionRow, ResourceRow
from storage.search import index_resource, unindex_resource
from storage.search.index import StaleIndexRows
from storage.search.prepared import PreparedIndex, remember
from storage.versions import StoredVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionInfo:
    """A partition as ``GET /partitions`` shows it."""

    name: str
    created_at: datetime
    resource_count: int


_COLUMNS = (
    ResourceRow.surrogate_id,
    ResourceRow.resource_type,
    ResourceRow.resource_id,
    ResourceRow.version,
    ResourceRow.last_updated,
    ResourceRow.is_deleted,
    ResourceRow.raw,
)


def _stored(row: Any) -> StoredVersion:
    raw = row.raw
    return StoredVersion(
        surrogate_id=row.surrogate_id,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        version=row.version,
        last_updated=row.last_updated,
        deleted=row.is_deleted,
        raw=raw.encode("utf-8") if raw is not None else None,
    )


class ResourceRepository:
    """Read and write resource versions of one partition."""

    def __init__(self, session: Session, partition: str, known_ids: dict[str, int] | None = None):
        self.session = session
        self.partition = partition
        # The database's cache of committed partition ids (a partition's id never changes and partitions
        # are never removed; row-level security scopes every row by the name, so an id can never widen it).
        self._known = known_ids if known_ids is not None else {}
        self._partition_id: int | None = self._known.get(partition)

    def partition_id(self, *, create: bool = False) -> int | None:
        """Return the partition's integer id; create the partition first if ``create`` (writes only)."""
        if self._partition_id is not None:
            return self._partition_id
        found = self.session.scalar(select(PartitionRow.id).where(PartitionRow.name == self.partition))
        if found is not None:
            # Seen before this transaction wrote anything: committed, so it can be remembered.
            self._known[self.partition] = found
        if found is None and create:
            self.session.execute(
                pg_insert(PartitionRow)
                .values(name=self.partition)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            found = self.session.scalar(select(PartitionRow.id).where(PartitionRow.name == self.partition))
        self._partition_id = found
        return found

    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> StoredVersion | None:
        """Return the current version (possibly a deletion), or None if the resource never existed."""
        pid = self.partition_id()
        if pid is None:
            return None
        stmt = select(*_COLUMNS).where(
            ResourceRow.partition_id == pid,
            ResourceRow.resource_type == resource_type,
            ResourceRow.resource_id == resource_id,
            ResourceRow.is_history.is_(False),
        )
        if lock:
            stmt = stmt.with_for_update()
        row = self.session.execute(stmt).first()
        return _stored(row) if row is not None else None

    def version(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None:
        """Return one version of a resource, or None (also for a number no version column can hold)."""
        if not 1 <= version <= MAX_VERSION:
            return None
        pid = self.partition_id()
        if pid is None:
            return None
        row = self.session.execute(
            select(*_COLUMNS).where(
                ResourceRow.partition_id == pid,
                ResourceRow.resource_type == resource_type,
                ResourceRow.resource_id == resource_id,
                ResourceRow.version == version,
            )
        ).first()
        return _stored(row) if row is not None else None

    def by_surrogate_ids(self, surrogate_ids: list[int]) -> list[StoredVersion]:
        """Return the versions with these surrogate ids in this partition, in the order given."""
        pid = self.partition_id()
        if pid is None or not surrogate_ids:
            return []
        rows = self.session.execute(
            select(*_COLUMNS).where(
                ResourceRow.partition_id == pid, ResourceRow.surrogate_id.in_(surrogate_ids)
            )
        ).all()
        by_id = {row.surrogate_id: _stored(row) for row in rows}
        return [by_id[sid] for sid in surrogate_ids if sid in by_id]

    def write(
        self,
        resource_type: str,
        resource_id: str,
        render: Callable[[int, datetime], tuple[bytes, dict[str, Any]] | None],
        *,
        previous: StoredVersion | None,
        last_updated: datetime | None = None,
        version: int | None = None,
        prepared: PreparedIndex | None = None,
    ) -> StoredVersion:
        """Store the next version of a resource (``render`` returning None stores a deletion).

        ``previous`` is the current version the caller locked with ``current(lock=True)``. ``render`` gets
        the new version number and time and returns the raw bytes to store and the parsed resource to index.
        ``prepared`` holds the index rows the caller extracted before the transaction
        (``storage.search.prepared``), written instead of extracting them here.
        """
        pid = self.partition_id(create=True)
        assert pid is not None
        number = version if version is not None else (previous.version + 1 if previous else 1)
        when = last_updated or write_instant(self.session)
        rendered = render(number, when)
        if previous is not None:
            self.session.execute(
                update(ResourceRow)
                .where(ResourceRow.surrogate_id == previous.surrogate_id)
                .values(is_history=True)
            )
            unindex_resource(self.session, previous.surrogate_id)
        raw = rendered[0] if rendered is not None else None
        sid = self.session.scalar(
            pg_insert(ResourceRow)
            .values(
                partition_id=pid,
                resource_type=resource_type,
                resource_id=resource_id,
                version=number,
                last_updated=when,
                is_deleted=rendered is None,
                is_history=False,
                raw=raw.decode("utf-8") if raw is not None else None,
            )
            .returning(ResourceRow.surrogate_id)
        )
        assert sid is not None
        if rendered is not None:
            try:
                registry, rows = index_resource(
                    self.session,
                    pid,
                    resource_type,
                    sid,
                    rendered[1],
                    ahead=prepared.ahead if prepared is not None else None,
                )
            except StaleIndexRows as exc:
                remember(self._url(), self.partition, exc.registry)  # what the write tried again uses
                raise
            remember(self._url(), self.partition, registry)
            if rows.skipped and prepared is None:
                log.warning(
                    "%s/%s in %s: not indexed, over the evaluation budget: %s",
                    resource_type,
                    resource_id,
                    self.partition,
                    ", ".join(sorted(rows.skipped)),
                    extra={"partition": self.partition},
                )
        return StoredVersion(sid, resource_type, resource_id, number, when, rendered is None, raw)

    def _url(self) -> str:
        bind = self.session.get_bind()
        return str(bind.engine.url)

    def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: datetime | None = None,
        at: datetime | None = None,
        count: int = 20,
        offset: int = 0,
    ) -> tuple[list[StoredVersion], int]:
        """Return versions newest first and the total number that match."""
        pid = self.partition_id()
        if pid is None:
            return [], 0
        conds = [ResourceRow.partition_id == pid]
        if resource_type is not None:
            conds.append(ResourceRow.resource_type == resource_type)
        if resource_id is not None:
            conds.append(ResourceRow.resource_id == resource_id)
        if since is not None:
            conds.append(ResourceRow.last_updated > since)
        if at is not None:
            conds.append(ResourceRow.last_updated <= at)
        where = and_(*conds)
        total = self.session.scalar(select(func.count()).select_from(ResourceRow).where(where)) or 0
        rows = self.session.execute(
            select(*_COLUMNS)
            .where(where)
            .order_by(ResourceRow.last_updated.desc(), ResourceRow.surrogate_id.desc())
            .limit(count)
            .offset(offset)
        ).all()
        return [_stored(r) for r in rows], total


def list_partitions(session: Session) -> list[PartitionInfo]:
    """Return every partition with its creation time and count of live resources (administrative)."""
    live = (
        select(ResourceRow.partition_id, func.count().label("n"))
        .where(ResourceRow.is_history.is_(False), ResourceRow.is_deleted.is_(False))
        .group_by(ResourceRow.partition_id)
        .subquery()
    )
    rows = session.execute(
        select(PartitionRow.name, PartitionRow.created_at, func.coalesce(live.c.n, 0))
        .outerjoin(live, live.c.partition_id == PartitionRow.id)
        .order_by(PartitionRow.name)
    ).all()
    return [PartitionInfo(name=r[0], created_at=r[1], resource_count=int(r[2])) for r in rows]
