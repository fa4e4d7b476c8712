"""The audit trail: an append-only table of requests and job state changes.

The application role may insert and nothing else; reading goes through ``Database.admin_session()``.
Job state changes are recorded by a trigger on the job table (``storage.security.JOB_AUDIT_SQL``), in the
same transaction as the change, whatever code path made it.

Request events are written off the request's path: ``AuditLog.submit`` queues them (each with the time it
happened), and one writer thread per process appends what has queued in one multi-row INSERT, about every
``FLUSH_SECONDS``. A failed write is retried with back-off, the events kept; ``flush`` waits until what was
queued is stored (queries and the process's exit call it), so a process stopped normally loses nothing. Only
a process killed outright loses the events of its last ``FLUSH_SECONDS``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    insert,
    select,
    true,
)
from sqlalchemy.exc import OperationalError

from storage.database import Database
from storage.db import sqlalchemy_url

log = logging.getLogger(__name__)

_metadata = MetaData()
audit_event = Table(
    "audit_event",
    _metadata,
    Column("id", BigInteger, primary_key=True),
    Column("recorded_at", DateTime(timezone=True)),
    Column("partition", String(64)),
    Column("actor", String(256)),
    Column("operation", String(64)),
    Column("resource_type", String(64)),
    Column("resource_id", String(64)),
    Column("job_id", String(64)),
    Column("method", String(16)),
    Column("path", String(2048)),
    Column("status", Integer),
    Column("outcome", String(16)),
    Column("source_address", String(64)),
    Column("detail", Text),
    implicit_returning=False,  # RETURNING would need read access, which only the admin path has
)
# The same table without its id column, for inserts: the id comes from the column's default in the same
# statement (with the id in the table, SQLAlchemy fetched the sequence value in a round trip of its own).
_insert_target = Table(
    "audit_event", MetaData(), *(Column(c.name, c.type) for c in audit_event.columns if c.name != "id")
)
#: Every audit log of the process, so that ``flush_all`` can store what each has queued.
_LOGS: weakref.WeakSet[AuditLog] = weakref.WeakSet()
#: How long the writer lets events gather before it writes them (at most).
FLUSH_SECONDS = 0.02
#: Seconds a writer thread with nothing to write waits before it ends.
WRITER_IDLE_SECONDS = 1.0
#: Events kept in memory at most while the database does not take them (older ones are dropped and logged).
MAX_PENDING = 100_000


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened: who did what, where, to what, and how it ended."""

    operation: str
    outcome: str
    partition: str | None = None
    actor: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    job_id: str | None = None
    method: str | None = None
    path: str | None = None
    status: int | None = None
    source_address: str | None = None
    detail: str | None = None
    recorded_at: datetime | None = None

    def row(self) -> dict[str, Any]:
        """Return the event as a table row, each value cut to its column's width."""
        limits = {c.name: getattr(c.type, "length", None) for c in audit_event.columns}
        out: dict[str, Any] = {}
        for name, given in self.__dict__.items():
            value = given
            if name == "recorded_at" and value is None:
                continue  # the column's default: the time of the insert
            limit = limits.get(name)
            if isinstance(value, str):
                value = value.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
                if limit:
                    value = value[:limit]
            out[name] = value
        return out


@dataclass(frozen=True)
class AuditRecord:
    """A stored audit event with its id and time."""

    id: int
    recorded_at: datetime
    event: AuditEvent


class AuditLog:
    """Append audit events and query them (administrators only)."""

    def __init__(self, database: Database):
        self.database = database
        # A small pool of its own: autocommit (one round trip per event) and asynchronous commit (no fsync
        # wait), settings that must never leak onto the connections resources are written with.
        self.engine: Engine = create_engine(
            sqlalchemy_url(database.url),
            pool_size=2,
            max_overflow=8,
            pool_recycle=300,
            isolation_level="AUTOCOMMIT",
            connect_args={"options": "-c timezone=UTC -c synchronous_commit=off"},
        )

        self._pending: deque[AuditEvent] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._stored = 0
        self._writer: threading.Thread | None = None
        self._closed = False
        _LOGS.add(self)

    def write(self, event: AuditEvent) -> None:
        """Append one event now: a single autocommitted INSERT (asynchronous commit: no fsync wait)."""
        self.write_many([event])

    def write_many(self, events: list[AuditEvent]) -> None:
        """Append events now in one autocommitted statement (asynchronous commit: no fsync wait)."""
        if not events:
            return
        rows = [e.row() for e in events]
        # One column set for every row of the statement: the time, given or the insert's.
        if any("recorded_at" in r for r in rows):
            now = datetime.now().astimezone()
            rows = [{"recorded_at": now, **r} for r in rows]
        with self.engine.connect() as conn:
            conn.execute(insert(_insert_target), rows)

    def submit(self, events: list[AuditEvent]) -> None:
        """Queue events for the writer thread, stamped with the time they happened (no round trip)."""
        if not events:
            return
        now = datetime.now().astimezone()
        stamped = [e if e.recorded_at is not None else replace(e, recorded_at=now) for e in events]
        with self._cond:
            if self._closed:
                self.write_many(stamped)
                return
            self._start_writer()
            room = max(0, MAX_PENDING - len(self._pending))
            if room < len(stamped):
                log.error(
                    "audit: %d events dropped, the database has not taken the ones before them",
                    len(stamped) - room,
                )
                stamped = stamped[:room]
            self._pending.extend(stamped)
            self._submitted += len(stamped)
            self._cond.notify_all()

    def _start_writer(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="bulkhead-audit", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        backoff = FLUSH_SECONDS
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(WRITER_IDLE_SECONDS)
                if not self._pending:
                    # Idle (or closed): the thread ends, so that it never keeps an unused log (and its
                    # connections) alive; the next submit starts another.
                    self._writer = None
                    return
            time.sleep(FLUSH_SECONDS)  # let a batch gather
            with self._cond:
                batch = list(self._pending)
            try:
                self.write_many(batch)
            except OperationalError:
                log.exception("audit: %d events not written yet; retrying", len(batch))
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:
                # An event the table refuses must not hold back the others: write them one by one.
                self._write_each(batch)
            backoff = FLUSH_SECONDS
            with self._cond:
                for _ in range(len(batch)):
                    self._pending.popleft()
                self._stored += len(batch)
                self._cond.notify_all()

    def _write_each(self, batch: list[AuditEvent]) -> None:
        for event in batch:
            try:
                self.write_many([event])
            except OperationalError:
                raise
            except Exception:
                log.exception(
                    "audit: an event the table refuses was dropped: %s %s", event.method, event.path
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far is stored; return False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._stored < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._writer is None or not self._writer.is_alive():
                    return self._stored >= target
                self._cond.wait(left)
        return True

    def dispose(self) -> None:
        """Store what is queued, stop the writer, and close the audit connections."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join(timeout=5)
        self.engine.dispose()

    def query(
        self,
        *,
        partition: str | None = None,
        operation: str | None = None,
        job_id: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Return matching events, newest first (administrative: crosses partitions)."""
        t = audit_event.c
        conds = []
        for column, value in (
            (t.partition, partition),
            (t.operation, operation),
            (t.job_id, job_id),
            (t.actor, actor),
        ):
            if value is not None:
                conds.append(column == value)
        if since is not None:
            conds.append(t.recorded_at >= since)
        if until is not None:
            conds.append(t.recorded_at < until)
        if before_id is not None:
            conds.append(t.id < before_id)
        self.flush()
        stmt = select(audit_event).where(and_(true(), *conds)).order_by(t.id.desc()).limit(limit)
        with self.database.admin_session() as session:
            rows = session.execute(stmt).mappings().all()
        fields = [f for f in AuditEvent.__dataclass_fields__]
        return [AuditRecord(r["id"], r["recorded_at"], AuditEvent(**{f: r[f] for f in fields})) for r in rows]


def flush_all(timeout: float = 10.0) -> bool:
    """Store what every audit log of the process has queued (before its database goes away), waiting
    ``timeout`` seconds at most in all."""
    deadline = time.monotonic() + timeout
    return all([log_.flush(max(0.0, deadline - time.monotonic())) for log_ in list(_LOGS)])


#: At exit, what is queued is stored: a few seconds at most, for every audit log of the process together.
atexit.register(flush_all, 3.0)
