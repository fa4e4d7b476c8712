"""Export jobs as the API sees them: submit, status, cancel and list, on top of the generic job service.

The generic machinery (``orchestrator/service.py``: job table, orchestrator, workers) is shared by every bulk
operation; this module only adapts its answers to what the ``$export`` endpoints need, and always passes the
partition, so that a job of another partition is never found.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import NotFound, ServiceUnavailable
from storage import Database

ACTIVE = ("queued", "planning", "running")


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
    created_at: datetime


def _service() -> Any:
    try:
        return importlib.import_module("orchestrator.service")
    except ImportError as exc:
        raise ServiceUnavailable("Bulk jobs are not available on this server") from exc


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def submit(
    db: Database,
    partition: str,
    kind: str,
    definition: dict[str, Any],
    *,
    request_url: str,
    transaction_time: datetime,
    max_concurrent: int,
) -> str:
    """Store a new export job of ``partition`` and start it; return its id (TooManyRequests at the limit)."""
    job = _service().submit(
        db, partition, kind, definition, request_url=request_url, transaction_time=transaction_time
    )
    return str(_get(job, "id"))


def status(db: Database, partition: str, job_id: str, *, kind: str) -> ExportStatus:
    """Return the state of an export of ``partition``; NotFound for any other job id."""
    view = _service().status(db, partition, job_id)
    if view is None or _get(view, "kind", kind) != kind:
        raise NotFound(f"No {kind} job {job_id} in this partition")
    state = str(_get(view, "state", None) or _get(view, "status"))
    error = _get(view, "error")
    return ExportStatus(
        job_id=job_id,
        state=state,
        progress_text=str(_get(view, "progress_text", "") or state),
        result=_get(view, "result"),
        error=error,
        http_status=int(_get(view, "http_status", 500) or 500),
        request_url=_get(view, "request_url"),
        expires_at=_get(view, "expires_at"),
        ended_at=_get(view, "ended_at"),
    )


def cancel(db: Database, partition: str, job_id: str, *, kind: str) -> None:
    """Cancel a running export of ``partition`` or release a finished one (its files may go)."""
    status(db, partition, job_id, kind=kind)
    _service().cancel(db, partition, job_id)


def list_jobs(db: Database, partition: str, *, kind: str | None, status: str | None) -> list[JobSummary]:
    """List the jobs of ``partition``."""
    jobs = _service().list_jobs(db, partition, kind=kind, status=status)
    return [
        JobSummary(
            id=str(_get(j, "id")),
            kind=str(_get(j, "kind")),
            status=str(_get(j, "status")),
            request_url=_get(j, "request_url"),
            created_at=_get(j, "created_at"),
        )
        for j in jobs
    ]
