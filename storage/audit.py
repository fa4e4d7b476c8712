"""The audit trail: an append-only table of requests and job state changes.

The application role may insert and nothing else; reading goes through ``Database.admin_session()``.
Job state changes are recorded by a trigger on the job table (``storage.security.JOB_AUDIT_SQL``), in the
same transaction as the change, whatever code path made it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

    def row(self) -> dict[str, Any]:
        """Return the event as a table row, each value cut to its column's width."""
        limits = {c.name: getattr(c.type, "length", None) for c in audit_event.columns}
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            limit = limits.get(name)
            out[name] = value[:limit] if isinstance(value, str) and limit else value
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

    def write(self, event: AuditEvent) -> None:
        """Append one event: a single autocommitted INSERT (asynchronous commit: no fsync wait)."""
        self.write_many([event])

    def write_many(self, events: list[AuditEvent]) -> None:
        """Append events in one autocommitted statement (asynchronous commit: no fsync wait)."""
        if not events:
            return
        with self.engine.connect() as conn:
            conn.execute(insert(audit_event), [e.row() for e in events])

    def dispose(self) -> None:
        """Close the audit connections."""
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
        stmt = select(audit_event).where(and_(true(), *conds)).order_by(t.id.desc()).limit(limit)
        with self.database.admin_session() as session:
            rows = session.execute(stmt).mappings().all()
        fields = [f for f in AuditEvent.__dataclass_fields__]
        return [AuditRecord(r["id"], r["recorded_at"], AuditEvent(**{f: r[f] for f in fields})) for r in rows]
