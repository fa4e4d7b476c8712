"""Service functions the API calls for every bulk operation: submit, cancel, status and list.

Every function takes the partition and the caller (``JobCaller``) and filters by both: a job of another
partition, or one another client submitted, is NotFound, exactly like an id that never existed (same answer,
same single lookup). Only an administrator's caller sees every client's jobs. Status is derived from the
group's rows when asked.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from core.errors import NotFound, ServiceUnavailable, TooManyRequests
from core.jobs import TERMINAL_STATUSES, JobCaller, JobInfo, JobStatus, JobStatusView
from core.settings import Settings
from storage import Database
from storage.jobs import JobQueue
from workers.broker import MessageSender, outbox_for

log = logging.getLogger(__name__)

#: Seconds a client should wait before submitting again after a concurrency refusal.
RETRY_AFTER_LIMIT_SECONDS = 30


def _sender(settings: Settings | None, sender: MessageSender | None) -> MessageSender:
    if sender is not None:
        return sender
    return outbox_for(settings if settings is not None else Settings.from_env())


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else Settings.from_env()


def submit(
    db: Database,
    partition: str,
    kind: str,
    definition: dict[str, Any],
    *,
    caller: JobCaller,
    settings: Settings | None = None,
    request_url: str | None = None,
    transaction_time: datetime | None = None,
    max_concurrent: int | None = None,
    priority: int = 0,
    sender: MessageSender | None = None,
) -> JobInfo:
    """Store a group job of ``kind`` in ``partition`` owned by ``caller``'s client, commit, then send one
    ``orchestrate`` message.

    Raises TooManyRequests (with ``retry_after``) when ``max_concurrent`` jobs of this kind are already
    active in the partition. If the broker is unreachable the job stays queued and the sweeper sends the
    message later. ``settings`` default to the environment's.
    """
    config = _settings(settings)
    queue = JobQueue(db)
    job = queue.create_group(
        partition,
        kind,
        definition,
        max_attempts=config.job_max_attempts,
        request_url=request_url,
        transaction_time=transaction_time,
        priority=priority,
        max_active=max_concurrent,
        client_id=caller.client_id,
    )
    if job is None:
        raise TooManyRequests(
            f"At most {max_concurrent} {kind} jobs may run at once in this partition; try again later",
            retry_after=RETRY_AFTER_LIMIT_SECONDS,
        )
    try:
        _sender(config, sender).send_orchestrate(partition, job.id)
    except ServiceUnavailable as exc:
        log.warning(
            "job %s stored, but its orchestrate message was not sent (%s); the sweeper will send it",
            job.id,
            exc.message,
            extra={"partition": partition, "job_id": job.id},
        )
    log.info("%s job %s submitted", kind, job.id, extra={"partition": partition, "job_id": job.id})
    return job


def _group(db: Database, partition: str, job_id: str, caller: JobCaller, kind: str | None) -> JobInfo:
    job = JobQueue(db).find_group(partition, job_id, caller)
    if job is None or job.cancel_requested or (kind is not None and job.kind != kind):
        raise NotFound(f"No {kind or 'bulk'} job {job_id} in this partition")
    return job


def status(
    db: Database, partition: str, job_id: str, *, caller: JobCaller, kind: str | None = None
) -> JobStatusView:
    """Return what ``caller`` may know of group job ``job_id`` of ``partition`` (NotFound otherwise)."""
    job = _group(db, partition, job_id, caller, kind)
    summary = JobQueue(db).summary(partition, job_id)
    return JobStatusView(
        id=job.id,
        kind=job.kind,
        partition=job.partition,
        state=job.status,
        request_url=job.request_url,
        transaction_time=job.transaction_time,
        created_at=job.created_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        expires_at=job.expires_at,
        parts=summary.total,
        parts_done=summary.done,
        progress=summary.progress,
        result=job.result if job.status == JobStatus.COMPLETED else None,
        error=job.error if job.status == JobStatus.FAILED else None,
    )


def cancel(
    db: Database,
    partition: str,
    job_id: str,
    *,
    caller: JobCaller,
    kind: str | None = None,
    settings: Settings | None = None,
    sender: MessageSender | None = None,
) -> JobInfo:
    """Cancel ``caller``'s group job ``job_id`` of ``partition``; every later status or cancel is NotFound.

    Queued work is cancelled at once and running work stops at its next heartbeat; a finished job is
    released (it expires now, and its files go with it). Returns the group as it is afterwards.
    """
    _group(db, partition, job_id, caller, kind)
    job = JobQueue(db).request_cancel(partition, job_id, caller)
    if job is None:
        raise NotFound(f"No {kind or 'bulk'} job {job_id} in this partition")
    log.info("job %s cancel requested", job_id, extra={"partition": partition, "job_id": job_id})
    if job.status not in TERMINAL_STATUSES or job.status == JobStatus.CANCELLED:
        try:
            _sender(settings, sender).send_orchestrate(partition, job_id)
        except ServiceUnavailable as exc:
            log.warning(
                "cancel of %s recorded; orchestrate not sent (%s)",
                job_id,
                exc.message,
                extra={"partition": partition, "job_id": job_id},
            )
    return job


def list_jobs(
    db: Database,
    partition: str,
    *,
    caller: JobCaller,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[JobInfo]:
    """List the group jobs of ``partition`` that ``caller`` may see, newest first (cancelled ones too)."""
    if status is not None and status not in {s.value for s in JobStatus}:
        return []
    return JobQueue(db).list_groups(partition, caller, kind=kind, status=status, limit=limit)
