"""The bulk writer: create many NEW resources (version 1) in one partition with COPY.

This is the create-only path (``bulkhead seed``, benchmarks, and the base that ``$import`` builds on): every
resource becomes version 1 of a resource that does not exist yet in the partition. A resource that already
exists, or the same id twice in one stream, is a ``Conflict`` (the partition's unique index decides), and
the batch that carried it writes nothing.

How a batch is written, inside the caller's unit of work (so the partition is set for row-level security):

1. reserve one surrogate id per resource from the ``resource`` identity sequence (the search-index rows need
   them before the rows exist, and they keep the stream's order);
2. ``COPY … FROM STDIN`` the rows into a session-local temporary staging table: PostgreSQL refuses ``COPY
   FROM`` into a table under row-level security, and the temporary table has neither policies nor indexes;
3. one ``INSERT INTO resource … SELECT … FROM`` the staging table, which the partition policy checks row by
   row (a row of another partition is refused, not written);
4. the search-index rows of the batch: ``storage.search.index_rows_for`` (the partition's own search
   parameters included) and ``write_index_rows``, which stages large sets the same way
   (``storage/staging.py``); unless ``index=False`` (a trusted load whose partition is reindexed later).

Memory stays bounded whatever the input size: ``write_new_resources`` pulls the input lazily and holds at
most one batch (``batch_rows`` resources or ``batch_bytes`` of raw JSON, whichever comes first).

The raw JSON is stored exactly as given: the caller builds it (``stamp_new`` does it for a resource dict),
and its ``meta.versionId`` / ``meta.lastUpdated`` must say version 1 at ``last_updated``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
from psycopg import errors as pg_errors

from core.errors import Conflict, InvalidRequest
from core.fhirdates import format_instant
from core.fhirtypes import resource_types
from core.partition import validate_partition_name
from core.validation import ID_PATTERN
from storage.database import Database
from storage.search import IndexRows, index_rows_for, registry_for, write_index_rows
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)

STAGE_TABLE = "bulkhead_resource_stage"
_STAGE_DDL = (
    f"DO $$ BEGIN IF to_regclass('pg_temp.{STAGE_TABLE}') IS NULL THEN CREATE TEMPORARY TABLE {STAGE_TABLE} ("
    "surrogate_id bigint NOT NULL, resource_type varchar(64) NOT NULL, resource_id varchar(64) NOT NULL, "
    "last_updated timestamptz NOT NULL, raw text NOT NULL) ON COMMIT DELETE ROWS; END IF; END $$"
)
_STAGE_COPY = f"COPY {STAGE_TABLE} (surrogate_id, resource_type, resource_id, last_updated, raw) FROM STDIN"
_MOVE = (
    "INSERT INTO resource (surrogate_id, partition_id, resource_type, resource_id, version, last_updated, "
    "is_deleted, is_history, raw) "
    "SELECT surrogate_id, %s, resource_type, resource_id, 1, last_updated, false, false, raw "
    f"FROM {STAGE_TABLE}"
)
_RESERVE = "SELECT nextval(pg_get_serial_sequence('resource', 'surrogate_id')) FROM generate_series(1, %s)"


@dataclass(frozen=True)
class NewResource:
    """A resource to create as version 1: its stored bytes, the same parsed, and its time."""

    resource_type: str
    resource_id: str
    raw: bytes
    resource: Mapping[str, Any]
    last_updated: datetime


@dataclass
class BulkResult:
    """What a bulk write stored: resources per type, raw bytes, batches and the time it took."""

    counts: Counter[str] = field(default_factory=Counter)
    resources: int = 0
    bytes: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Return resources written per second."""
        return self.resources / self.seconds if self.seconds > 0 else 0.0

    def add(self, batch: Sequence[NewResource]) -> None:
        """Count one written batch."""
        self.batches += 1
        self.resources += len(batch)
        for item in batch:
            self.counts[item.resource_type] += 1
            self.bytes += len(item.raw)


def stamp_new(resource: Mapping[str, Any], when: datetime) -> NewResource:
    """Return ``resource`` as version 1 stored at ``when``: ``meta.versionId`` and ``meta.lastUpdated`` set.

    ``resourceType``, ``id`` and ``meta`` come first, as the server stores every resource; ``when`` is cut to
    milliseconds, the precision of ``meta.lastUpdated``, so that the column and the JSON agree.
    """
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = "1"
    meta["lastUpdated"] = format_instant(when)
    stored: dict[str, Any] = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    for key, value in resource.items():
        if key not in stored:
            stored[key] = value
    return NewResource(stored["resourceType"], stored["id"], orjson.dumps(stored), stored, when)


def _check(item: NewResource, known_types: frozenset[str]) -> None:
    if item.resource_type not in known_types:
        raise InvalidRequest(f"Unknown resource type {item.resource_type!r}")
    if not ID_PATTERN.fullmatch(item.resource_id):
        raise InvalidRequest(f"Invalid resource id {item.resource_id!r}: use 1-64 of A-Z a-z 0-9 - .")
    if item.last_updated.tzinfo is None:
        raise InvalidRequest(f"{item.resource_type}/{item.resource_id}: last_updated needs a time zone")
    if item.resource.get("resourceType") != item.resource_type or item.resource.get("id") != item.resource_id:
        raise InvalidRequest(
            f"{item.resource_type}/{item.resource_id}: the resource's resourceType and id do not match"
        )


def _escape(raw: bytes) -> bytes:
    """Return ``raw`` as one field of COPY's text format."""
    raw = raw.replace(b"\\", b"\\\\")
    if b"\n" in raw or b"\r" in raw or b"\t" in raw:
        raw = raw.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t")
    return raw


def _copy_lines(batch: Sequence[NewResource], surrogate_ids: Sequence[int]) -> bytes:
    lines = []
    for sid, item in zip(surrogate_ids, batch, strict=True):
        lines.append(
            b"%d\t%s\t%s\t%s\t%s\n"
            % (
                sid,
                item.resource_type.encode(),
                item.resource_id.encode(),
                item.last_updated.isoformat().encode(),
                _escape(item.raw),
            )
        )
    return b"".join(lines)


def _connection(uow: UnitOfWork) -> psycopg.Connection[Any]:
    """Return the psycopg connection under the unit of work's current transaction."""
    return cast("psycopg.Connection[Any]", uow.session.connection().connection.driver_connection)


def _index_batch(
    uow: UnitOfWork, partition_id: int, batch: Sequence[NewResource], sids: Sequence[int]
) -> int:
    """Write the search-index rows of a batch (the partition's own search parameters included)."""
    registry = registry_for(uow.session, partition_id)
    rows = IndexRows()
    for sid, item in zip(sids, batch, strict=True):
        index_rows_for(
            item.resource_type, sid, partition_id, dict(item.resource), registry=registry, into=rows
        )
    return write_index_rows(uow.session, rows)


def _existing(cur: psycopg.Cursor[Any], partition_id: int) -> list[str]:
    """Return up to five staged resources that already exist in the partition."""
    rows = cur.execute(
        f"SELECT s.resource_type, s.resource_id FROM {STAGE_TABLE} s JOIN resource r "
        "ON r.partition_id = %s AND r.resource_type = s.resource_type AND r.resource_id = s.resource_id "
        "AND NOT r.is_history ORDER BY s.surrogate_id LIMIT 5",
        (partition_id,),
    ).fetchall()
    return [f"{rtype}/{rid}" for rtype, rid in rows]


def _first_repeat(batch: Sequence[NewResource]) -> str | None:
    seen: set[tuple[str, str]] = set()
    for item in batch:
        key = (item.resource_type, item.resource_id)
        if key in seen:
            return f"{key[0]}/{key[1]}"
        seen.add(key)
    return None


def copy_new_resources(uow: UnitOfWork, batch: Sequence[NewResource], *, index: bool = True) -> list[int]:
    """Insert one batch of new resources in the unit of work's transaction; return their surrogate ids.

    Creates the partition if needed and, with ``index``, writes the search-index rows. Raises ``Conflict``
    naming the resources at fault, and writes nothing of the batch, if a resource already exists in the
    partition or appears twice.
    """
    if not batch:
        return []
    known = resource_types()
    for item in batch:
        _check(item, known)
    repeat = _first_repeat(batch)
    if repeat is not None:
        raise Conflict(f"{repeat} appears twice in the input; the bulk writer only creates")
    pid = uow.resources.partition_id(create=True)
    assert pid is not None
    conn = _connection(uow)
    with conn.cursor() as cur:
        # The staging table (if this session has none yet) and the surrogate ids, in one round trip.
        cur.execute(f"{_STAGE_DDL}; {_RESERVE % len(batch)}")
        cur.nextset()
        sids = [row[0] for row in cur.fetchall()]
        with cur.copy(_STAGE_COPY) as copy:
            copy.write(_copy_lines(batch, sids))
        # Under row-level security PostgreSQL does not name the duplicate key: find it after a savepoint.
        # One round trip (no parameters, so several statements may go together; the id is an integer).
        try:
            cur.execute(
                f"SAVEPOINT bulkhead_move; {_MOVE % int(pid)}; "
                f"RELEASE SAVEPOINT bulkhead_move; DELETE FROM {STAGE_TABLE}"
            )
        except pg_errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT bulkhead_move")
            existing = _existing(cur, pid)
            cur.execute(f"DELETE FROM {STAGE_TABLE}")
            what = ", ".join(existing) or "a resource of the batch"
            raise Conflict(
                f"Already in partition {uow.partition!r}, and the bulk writer only creates: {what}"
            ) from None
        if index:
            _index_batch(uow, pid, batch, sids)
    return sids


def batches(
    resources: Iterable[NewResource], *, batch_rows: int, batch_bytes: int
) -> Iterator[list[NewResource]]:
    """Group a stream into lists of at most ``batch_rows`` resources and about ``batch_bytes`` raw bytes."""
    batch: list[NewResource] = []
    size = 0
    for item in resources:
        batch.append(item)
        size += len(item.raw)
        if len(batch) >= batch_rows or size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def write_new_resources(
    database: Database,
    partition: str,
    resources: Iterable[NewResource],
    *,
    batch_rows: int = 5000,
    batch_bytes: int = 16 * 1024 * 1024,
    on_batch: Callable[[Sequence[NewResource]], None] | None = None,
    index: bool = True,
) -> BulkResult:
    """Create every resource of a stream in ``partition``, one transaction per batch; return the counts.

    Batches committed before a failure stay written (each is whole: a resource is never half-written).
    ``on_batch`` is called after each commit with the resources of that batch. ``index=False`` writes no
    search-index rows: only for a load whose partition is reindexed afterwards.
    """
    validate_partition_name(partition)
    result = BulkResult()
    started = time.perf_counter()
    with database.unit_of_work(partition) as uow:
        for batch in batches(resources, batch_rows=batch_rows, batch_bytes=batch_bytes):
            copy_new_resources(uow, batch, index=index)
            uow.commit()
            result.add(batch)
            if on_batch is not None:
                on_batch(batch)
    result.seconds = time.perf_counter() - started
    log.info(
        "bulk write: %d resources (%d bytes) in %d batches, %.0f/s",
        result.resources,
        result.bytes,
        result.batches,
        result.resources / result.seconds if result.seconds else 0.0,
        extra={"partition": partition},
    )
    return result
