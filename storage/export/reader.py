"""Partition-scoped reads for bulk export: snapshot waits, range sizing, and raw-row streaming.

Export returns the stored bytes: rows stream out of ``COPY (SELECT raw ...) TO STDOUT`` in CSV format with a
quote and a delimiter JSON never holds unescaped (``_COPY_OPTIONS``), so each stored JSON arrives as it is,
between quote bytes, with nothing to undo but a doubled quote byte (which JSON text cannot contain). Nothing
is parsed.

Snapshot semantics: an export taken at instant T returns, for every resource of the partition, the version
that was current at T (the latest version whose ``last_updated`` is at or before T), unless that version is a
deletion. Rows written after T are ignored, and versions superseded after T are found through the rows
changed after T, so that an export running while clients write still returns exactly the state at T.
"""

from __future__ import annotations

import logging
import re
import select as selectmod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import ClientCursor
from psycopg.pq import ExecStatus
from sqlalchemy import (
    ColumnElement,
    Select,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from core.errors import ServiceUnavailable
from storage.db import allow_long_statements
from storage.models import PartitionRow, ResourceRow
from storage.uow import UnitOfWork

log = logging.getLogger(__name__)
#: The COPY format: CSV with a quote character and a delimiter that JSON never holds unescaped (control
#: characters must be escaped in JSON text), so that PostgreSQL writes each stored JSON as it is, without the
#: backslash escaping of the text format (which real resources need on every narrative's ``\"``).
_COPY_OPTIONS = "WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
_QUOTE = b"\x01"
_QUOTED = re.compile(rb"\x01((?:[^\x01]|\x01\x01)*)\x01")
_BLOCK_BYTES = 1 << 20
_COPY_OUT = ExecStatus.COPY_OUT
_COMMAND_OK = ExecStatus.COMMAND_OK
_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class ExportWindow:
    """Which versions an export returns: current at ``snapshot``, changed after ``since``, up to ``until``."""

    snapshot: datetime
    since: datetime | None = None
    until: datetime | None = None


def partition_id(uow: UnitOfWork, partition: str) -> int | None:
    """Return the integer id of ``partition``, or None if it holds nothing yet."""
    return uow.session.scalar(select(PartitionRow.id).where(PartitionRow.name == partition))


def _window_conditions(table: type[ResourceRow], window: ExportWindow) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [table.last_updated <= window.snapshot]
    if window.since is not None:
        conds.append(table.last_updated > window.since)
    if window.until is not None:
        conds.append(table.last_updated <= window.until)
    return conds


def _live_select(
    pid: int,
    rtype: str,
    low: int,
    high: int,
    window: ExportWindow,
    restrict_to: Sequence[Select[Any]],
) -> Select[Any]:
    r = ResourceRow
    conds = [
        r.partition_id == pid,
        r.resource_type == rtype,
        r.is_history.is_(False),
        r.is_deleted.is_(False),
        r.surrogate_id.between(low, high),
        *_window_conditions(r, window),
    ]
    conds.extend(r.surrogate_id.in_(sub) for sub in restrict_to)
    return select(r.raw).where(*conds).order_by(r.surrogate_id)


def _superseded_select(pid: int, rtype: str, low: int, high: int, window: ExportWindow) -> Select[Any]:
    """Select the versions current at the snapshot that a later write has superseded since."""
    changed = (
        select(ResourceRow.resource_id)
        .where(
            ResourceRow.partition_id == pid,
            ResourceRow.resource_type == rtype,
            ResourceRow.last_updated > window.snapshot,
        )
        .distinct()
        .subquery("changed")
    )
    older = aliased(ResourceRow, name="older")
    at_snapshot = (
        select(older.raw, older.surrogate_id, older.is_deleted, older.is_history, older.last_updated)
        .where(
            older.partition_id == pid,
            older.resource_type == rtype,
            older.resource_id == changed.c.resource_id,
            older.last_updated <= window.snapshot,
        )
        .order_by(older.version.desc())
        .limit(1)
        .lateral("at_snapshot")
    )
    conds: list[ColumnElement[bool]] = [
        at_snapshot.c.is_deleted.is_(False),
        at_snapshot.c.is_history.is_(True),
        at_snapshot.c.surrogate_id.between(low, high),
    ]
    if window.since is not None:
        conds.append(at_snapshot.c.last_updated > window.since)
    if window.until is not None:
        conds.append(at_snapshot.c.last_updated <= window.until)
    return select(at_snapshot.c.raw).select_from(changed).join(at_snapshot, literal(True)).where(*conds)


def _unquote(block: bytes) -> bytes:
    """Undo PostgreSQL's CSV quoting of stored JSON that holds a raw control character (not valid JSON text,
    but storable by a trusted import): quotes removed, doubled quote characters halved, and a raw newline or
    carriage return written as a space so that every NDJSON line stays one line."""

    def plain(match: re.Match[bytes]) -> bytes:
        inner = match.group(1).replace(_QUOTE + _QUOTE, _QUOTE)
        return inner.replace(b"\r", b" ").replace(b"\n", b" ")

    return _QUOTED.sub(plain, block)


def _wait(pg: Any, *, write: bool = False) -> None:
    """Wait for the server socket; ``select`` releases the GIL, so timer threads (heartbeats) keep running."""
    sock = pg.socket
    selectmod.select([] if write else [sock], [sock] if write else [], [], 1.0)


def _result(pg: Any) -> Any:
    while True:
        pg.consume_input()
        if not pg.is_busy():
            return pg.get_result()
        _wait(pg)


def _check(res: Any, expected: int) -> None:
    if res is None or res.status != expected:
        message = res.error_message.decode("utf-8", "replace") if res is not None else "no result"
        raise ServiceUnavailable(f"The export query failed: {message.strip()}")


def _copy_blocks(uow: UnitOfWork, stmt: Select[Any]) -> Iterator[tuple[bytes, int]]:
    """Run ``stmt`` as a COPY and yield blocks of NDJSON lines (about 1 MB) with their line counts.

    libpq is driven directly: psycopg's row-by-row COPY generator costs more per row than the database
    does to produce it. Rows are appended to one buffer (rows kept as separate objects until a join cost a
    third more). The wait for the first row (which may be long) happens in ``select``, without the GIL, so
    that timer threads such as heartbeats keep running.
    """
    compiled = stmt.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    conn = uow.session.connection().connection.driver_connection
    assert conn is not None
    sql = ClientCursor(conn).mogrify(f"COPY ({compiled.string}) TO STDOUT {_COPY_OPTIONS}", compiled.params)
    pg = conn.pgconn
    pg.send_query(sql.encode("utf-8"))
    while pg.flush():
        _wait(pg, write=True)
    state = "starting"
    try:
        _check(_result(pg), _COPY_OUT)
        state = "copying"
        buffer = bytearray()
        lines = 0
        get = pg.get_copy_data
        while True:
            # Rows stream without pause once the COPY has started: a blocking read is the cheapest.
            nbytes, data = get(0)
            if nbytes > 0:
                buffer += data
                lines += 1
                if len(buffer) < _BLOCK_BYTES:
                    continue
            if lines:
                block = bytes(buffer)
                if _QUOTE in block:
                    block = _unquote(block)
                yield block, lines
                buffer.clear()
                lines = 0
            if nbytes < 0:
                break
        state = "finishing"
        _check(_result(pg), _COMMAND_OK)
        while _result(pg) is not None:
            pass
        state = "done"
    finally:
        if state != "done":
            _abandon(conn, pg, copying=state == "copying")


def _abandon(conn: Any, pg: Any, *, copying: bool) -> None:
    """Cancel a COPY left unfinished (an error, or a consumer that stopped) and drain the connection."""
    conn.cancel_safe()
    while copying:
        nbytes, _ = pg.get_copy_data(1)
        if nbytes == 0:
            _wait(pg)
            pg.consume_input()
        elif nbytes < 0:
            break
    while _result(pg) is not None:
        pass


def stream_raw(
    uow: UnitOfWork,
    pid: int,
    rtype: str,
    low: int,
    high: int,
    window: ExportWindow,
    *,
    restrict_to: Sequence[Select[Any]] = (),
) -> Iterator[tuple[bytes, int]]:
    """Yield the stored JSON of the range's resources as of the snapshot: NDJSON blocks and line counts.

    ``restrict_to`` are selects of surrogate ids (``_typeFilter`` matches, compartment members); a row is kept
    when it is in every one of them. Both parts run in one COPY statement, so they see one database snapshot.
    """
    # A range's COPY is costed high enough for JIT compilation, which takes longer than it saves on a plain
    # scan (set per transaction: the worker's unit of work).
    uow.session.execute(text("SET LOCAL jit = off"))
    # The COPY streams while the worker compresses and uploads: it may outlast the usual statement limit.
    allow_long_statements(uow.session)
    live = _live_select(pid, rtype, low, high, window, restrict_to)
    if restrict_to:
        # Search-index rows exist for current versions only: a version superseded after the snapshot
        # cannot be matched, and the resource is left to the next ``_since`` export.
        yield from _copy_blocks(uow, live)
        return
    ordered = live.subquery("live")
    superseded = _superseded_select(pid, rtype, low, high, window)
    yield from _copy_blocks(uow, select(union_all(select(ordered.c.raw), superseded).subquery("u").c.raw))


def deleted_resources(
    uow: UnitOfWork, pid: int, types: Sequence[str], window: ExportWindow
) -> Iterator[tuple[str, str]]:
    """Yield (type, id) of resources whose version current at the snapshot is a deletion in the window."""
    r = ResourceRow
    later = aliased(ResourceRow, name="later")
    stmt = (
        select(r.resource_type, r.resource_id)
        .where(
            r.partition_id == pid,
            r.is_deleted.is_(True),
            r.resource_type.in_(list(types)),
            *_window_conditions(r, window),
            ~select(later.surrogate_id)
            .where(
                later.partition_id == r.partition_id,
                later.resource_type == r.resource_type,
                later.resource_id == r.resource_id,
                later.version > r.version,
                later.last_updated <= window.snapshot,
            )
            .exists(),
        )
        .order_by(r.resource_type, r.surrogate_id)
        .execution_options(yield_per=10_000)
    )
    for rtype, rid in uow.session.execute(stmt):
        yield str(rtype), str(rid)
