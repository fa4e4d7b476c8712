"""Export jobs as the API sees them: submit, status, cancel and list, on top of the generic job service.

The generic machinery (``orchestrator/service.py``: job table, orchestrator, workers) is shared by every bulk
operation; this module only adapts its answers to what the ``$export`` endpoints need. Every call passes the
partition and the caller (a job of another partition, or of another client, is NotFound) and the
application's settings (so that messages go to the broker and queue namespace the API is configured with).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.jobs import ACTIVE_STATUSES, JobCaller
from core.settings import Settings
from orchestrator import service
from storage import Database

ACTIVE = tuple(str(s) for s in ACTIVE_STATUSES)


@dataclass(frozen=True)
class ExportStatus:
    """An export job's state as its status endpoint reports it."""

    job_id: str
    state: str
    progress_text: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    http_status: int
    request_url: str | None
    expires_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class JobSummary:
    """One line of ``GET [base]/_operations``."""

    id: str
    kind: str
    status: str
    request_url: str | None
    created_at: datetime | None


def submit(
    db: Database,
    partition: str,
    kind: str,
    definition: dict[str, Any],
    *,
    caller: JobCaller,
    settings: Settings,
    request_url: str,
    transaction_time: datetime,
    max_concurrent: int,
) -> str:
    """Store a new export job of ``partition`` and start it; return its id (TooManyRequests at the limit)."""
    job = service.submit(
        db,
        partition,
        kind,
        definition,
        caller=caller,
        settings=settings,
        request_url=request_url,
        transaction_time=transaction_time,
        max_concurrent=max_concurrent,
    )
    return job.id


def status(db: Database, partition: str, job_id: str, *, caller: JobCaller, kind: str) -> ExportStatus:
    """Return the state of ``caller``'s export of ``partition``; NotFound for any other job id."""
    view = service.status(db, partition, job_id, caller=caller, kind=kind)
    return ExportStatus(
        job_id=job_id,
        state=str(view.state),
        progress_text=view.progress_text,
        result=view.result,
        error=view.error,
        http_status=view.http_status,
        request_url=view.request_url,
        expires_at=view.expires_at,
        ended_at=view.ended_at,
    )


def cancel(
    db: Database, partition: str, job_id: str, *, caller: JobCaller, kind: str, settings: Settings
) -> None:
    """Cancel ``caller``'s running export of ``partition`` or release a finished one (its files may go)."""
    service.cancel(db, partition, job_id, caller=caller, kind=kind, settings=settings)


def list_jobs(
    db: Database, partition: str, *, caller: JobCaller, kind: str | None, status: str | None
) -> list[JobSummary]:
    """List the jobs of ``partition`` that ``caller`` may see."""
    jobs = service.list_jobs(db, partition, caller=caller, kind=kind, status=status)
    return [
        JobSummary(
            id=j.id,
            kind=j.kind,
            status=str(j.status),
            request_url=j.request_url,
            created_at=j.created_at,
        )
        for j in jobs
    ]
