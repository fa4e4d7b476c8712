"""Rebuild the search-index rows of one partition's resources, a surrogate-id range at a time.

``reindex_batch`` re-extracts the index rows of the next live current versions of a range with the
partition's registry (official parameters plus the partition's own) and replaces their old rows, in three
steps so that no FHIRPath runs while a transaction is open: the rows are read in a short transaction, their
index rows extracted with no transaction open (a partition's own parameters within their evaluation
budgets, the skips counted), then written in a second short transaction, for the versions that are still
current then (a version replaced meanwhile was indexed by its writer, and ``superseded`` counts it).
``superseded`` counts the versions of a range that were live when the reindex was planned and have been
replaced or deleted since: with the rows reindexed they must add up to the number planned, or something
was skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import text

from storage.importwrite import write_index
from storage.search.index import IndexRows, index_rows_for, unindex_resources
from storage.search.registry import registry_for
from storage.uow import UnitOfWork

if TYPE_CHECKING:
    from storage.database import Database

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one batch did: the last surrogate id it covered, how many it reindexed, what failed or was
    skipped (parameter code: resources it was not indexed for, over the evaluation budget)."""

    last: int
    reindexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


# A batch stops at this many bytes of stored JSON even when fewer than ``limit`` rows were read, so that a
# partition of large resources (documents, binaries) cannot make a batch hold gigabytes.
BATCH_BYTES = 32 * 1024 * 1024
# ... and its extraction stops after this many seconds (what it has not reached is the next batch's), so
# that a batch of costly custom parameters still commits, and reports progress, every few seconds.
BATCH_EXTRACT_SECONDS = 5.0

_STILL_CURRENT = text(
    "SELECT surrogate_id FROM resource WHERE partition_id = :pid AND surrogate_id = ANY(:sids)"
    " AND NOT is_history AND NOT is_deleted"
)


def _read(
    uow: UnitOfWork, pid: int, rtype: str, after: int, high: int, limit: int, max_bytes: int
) -> list[tuple[int, str, bytes]]:
    result = uow.session.execute(
        text(
            "SELECT surrogate_id, resource_id, raw FROM resource"
            " WHERE partition_id = :pid AND resource_type = :t AND NOT is_history AND NOT is_deleted"
            " AND surrogate_id > :after AND surrogate_id <= :high"
            " ORDER BY surrogate_id LIMIT :limit"
        ).execution_options(stream_results=True, yield_per=500),
        {"pid": pid, "t": rtype, "after": after, "high": high, "limit": limit},
    )
    rows: list[tuple[int, str, bytes]] = []
    read = 0
    try:
        for sid, rid, raw in result:
            rows.append((int(sid), str(rid), raw))
            read += len(raw)
            if read >= max_bytes:
                break
    finally:
        result.close()
    return rows


def reindex_batch(
    database: Database,
    partition: str,
    rtype: str,
    after: int,
    high: int,
    limit: int,
    max_bytes: int = BATCH_BYTES,
    max_seconds: float = BATCH_EXTRACT_SECONDS,
) -> Batch | None:
    """Reindex up to ``limit`` live current ``rtype`` versions with ids in ``(after, high]``; None: done.

    Rows stream from a server-side cursor and the batch ends early once ``max_bytes`` of JSON were read or
    ``max_seconds`` were spent extracting. The write commits asynchronously (``synchronous_commit off``):
    a batch lost in a crash is re-read when the range runs again, and the job's own completion is a
    synchronous commit that flushes every batch before it.
    """
    with database.unit_of_work(partition) as uow:
        pid = uow.resources.partition_id()
        if pid is None:
            return None
        stored = _read(uow, pid, rtype, after, high, limit, max_bytes)
        registry = registry_for(uow.session, pid)
    if not stored:
        return None
    batch = Batch(last=stored[0][0])
    index = IndexRows()
    extracted: list[int] = []
    deadline = time.monotonic() + max_seconds
    for sid, rid, raw in stored:
        batch.last = sid
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            batch.failed.append((rid, f"the stored JSON does not parse: {exc}"))
        else:
            index_rows_for(rtype, sid, pid, resource, registry=registry, into=index)
            extracted.append(sid)
        if time.monotonic() > deadline:
            break
    with database.unit_of_work(partition) as uow:
        uow.session.execute(text("SET LOCAL synchronous_commit TO off"))
        current = [int(s) for s in uow.session.scalars(_STILL_CURRENT, {"pid": pid, "sids": extracted})]
        if len(current) < len(extracted):  # replaced since it was read: its writer indexed the new version
            keep = set(current)
            for kind, rows in index.by_table.items():
                index.by_table[kind] = [r for r in rows if r[3] in keep]
        unindex_resources(uow.session, current)
        write_index(uow.session, index)
        uow.commit()
    batch.reindexed = len(current)
    batch.skipped = dict(index.skipped)
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
