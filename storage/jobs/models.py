"""The ``job`` table as a SQLAlchemy model, and its rows as ``JobInfo`` values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, SmallInteger, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.jobs import JobInfo, JobStatus
from storage.models import Base


class JobRow(Base):
    """One group (orchestrator) job or processing job; see migrations 0003 and 0006 for its indexes."""

    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    partition: Mapped[str] = mapped_column(String(64))
    ordinal: Mapped[int] = mapped_column(Integer, default=0)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    definition_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    request_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    transaction_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)


def to_info(row: Any) -> JobInfo:
    """Return the JobInfo of a ``JobRow`` (or of a result row with the same columns)."""
    return JobInfo(
        id=row.id,
        group_id=row.group_id,
        kind=row.kind,
        partition=row.partition,
        definition=row.definition,
        status=JobStatus(row.status),
        priority=row.priority,
        attempts=row.attempts,
        version=row.version,
        progress=row.progress or {},
        result=row.result,
        error=row.error,
        request_url=row.request_url,
        transaction_time=row.transaction_time,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        expires_at=row.expires_at,
        cancel_requested=row.cancel_requested,
        max_attempts=row.max_attempts,
        ordinal=row.ordinal,
        worker=row.worker,
        heartbeat_at=row.heartbeat_at,
        client_id=row.client_id,
    )
