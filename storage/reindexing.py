"""Rebuild the search-index rows of one partition's resources, a surrogate-id range at a time.

``reindex_batch`` re-extracts the index rows of the next live current versions of a range with the
partition's registry (official parameters plus the partition's own) and replaces their old rows.
``superseded`` counts the versions of a range that were live when the reindex was planned and have been
replaced or deleted since (each such change indexed the new version itself): with the rows reindexed they
must add up to the number planned, or something was skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
from sqlalchemy import text

from storage.importwrite import write_index
from storage.search.index import IndexRows, index_rows_for, unindex_resources
from storage.search.registry import registry_for
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one batch did: the last surrogate id it covered, how many it reindexed, and what failed."""

    last: int
    reindexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


# A batch stops at this many bytes of stored JSON even when fewer than ``limit`` rows were read, so that a
# partition of large resources (documents, binaries) cannot make a batch hold gigabytes.
BATCH_BYTES = 32 * 1024 * 1024


def reindex_batch(
    uow: UnitOfWork, rtype: str, after: int, high: int, limit: int, max_bytes: int = BATCH_BYTES
) -> Batch | None:
    """Reindex up to ``limit`` live current ``rtype`` versions with ids in ``(after, high]``; None: done.

    Rows stream from a server-side cursor and the batch ends early once ``max_bytes`` of JSON were read.
    The transaction commits asynchronously (``synchronous_commit off``): a batch lost in a crash is
    re-read when the range runs again, and the job's own completion is a synchronous commit that flushes
    every batch before it.
    """
    pid = uow.resources.partition_id()
    if pid is None:
        return None
    uow.session.execute(text("SET LOCAL synchronous_commit TO off"))
    result = uow.session.execute(
        text(
            "SELECT surrogate_id, resource_id, raw FROM resource"
            " WHERE partition_id = :pid AND resource_type = :t AND NOT is_history AND NOT is_deleted"
            " AND surrogate_id > :after AND surrogate_id <= :high"
            " ORDER BY surrogate_id LIMIT :limit"
        ).execution_options(stream_results=True, yield_per=500),
        {"pid": pid, "t": rtype, "after": after, "high": high, "limit": limit},
    )
    registry = registry_for(uow.session, pid)
    index = IndexRows()
    batch: Batch | None = None
    done: list[int] = []
    read = 0
    try:
        for sid, rid, raw in result:
            batch = batch or Batch(last=int(sid))
            batch.last = int(sid)
            read += len(raw)
            try:
                resource = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                batch.failed.append((rid, f"the stored JSON does not parse: {exc}"))
            else:
                index_rows_for(rtype, sid, pid, resource, registry=registry, into=index)
                done.append(sid)
            if read >= max_bytes:
                break
    finally:
        result.close()
    if batch is None:
        return None
    unindex_resources(uow.session, done)
    write_index(uow.session, index)
    batch.reindexed = len(done)
    return batch


def superseded(uow: UnitOfWork, rtype: str, low: int, high: int, watermark: int) -> int:
    """Count the live versions of ``low..high`` that a version stored after ``watermark`` has replaced."""
    pid = uow.resources.partition_id()
    if pid is None:
        return 0
    found = uow.session.execute(
        text(
            """
            SELECT count(*) FROM resource r
            WHERE r.partition_id = :pid AND r.resource_type = :t AND r.surrogate_id BETWEEN :low AND :high
              AND r.is_history AND NOT r.is_deleted
              AND EXISTS (
                  SELECT 1 FROM resource n
                  WHERE n.partition_id = r.partition_id AND n.resource_type = r.resource_type
                    AND n.resource_id = r.resource_id AND n.version = r.version + 1 AND n.surrogate_id > :w
              )
            """
        ),
        {"pid": pid, "t": rtype, "low": low, "high": high, "w": watermark},
    ).scalar()
    return int(found or 0)
