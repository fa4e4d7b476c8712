"""Job operations on behalf of clients (create, read, list, cancel) and of workers (claim, heartbeat, finish).

Every operation names the partition and filters by it: a job of another partition is simply not found. Every
lookup on behalf of a client also takes a ``JobCaller`` and filters by the client that submitted the job, in
the same statement: another client's job is not found either (one query whatever the answer, so a
mismatch looks and takes exactly like an id that never existed).
Worker operations are fenced by the job's version: claiming bumps it, and a worker may only heartbeat,
complete, fail or requeue the job under the version its claim returned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select, true, update
from sqlalchemy.orm import Session

from core.jobs import JobCaller, JobFenced, JobInfo, JobStatus, definition_hash, new_job_id
from storage.jobs.base import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL, JobStoreBase
from storage.jobs.models import JobRow, to_info

_GROUP = JobRow.id == JobRow.group_id
_PART = JobRow.id != JobRow.group_id


def seconds(value: float) -> Any:
    """Return an SQL interval of ``value`` seconds."""
    return func.make_interval(0, 0, 0, 0, 0, 0, max(0.0, float(value)))


def owned_by(caller: JobCaller) -> ColumnElement[bool]:
    """Return the condition that a job was submitted by ``caller`` (always true when it sees every client)."""
    if caller.every_client:
        return true()
    if caller.client_id is None:
        return JobRow.client_id.is_(None)
    return JobRow.client_id == caller.client_id


def _lock_key(*parts: str) -> Any:
    """Return the advisory-lock key of a name (64-bit hash computed by PostgreSQL)."""
    return func.hashtextextended(":".join(("bulkhead.job", *parts)), 0)


class JobQueueOps(JobStoreBase):
    """Create, read, list and cancel jobs; claim, heartbeat and finish processing jobs."""

    # -- clients ---------------------------------------------------------------------------------------

    def create_group(
        self,
        partition: str,
        kind: str,
        definition: dict[str, Any],
        *,
        max_attempts: int,
        request_url: str | None = None,
        transaction_time: datetime | None = None,
        priority: int = 0,
        max_active: int | None = None,
        client_id: str | None = None,
    ) -> JobInfo | None:
        """Store a queued group job submitted by ``client_id``; None when ``max_active`` of ``kind`` run.

        The limit counts every client's active jobs of the partition.
        """
        job_id = new_job_id()
        with self._session(partition) as s:
            if max_active is not None:
                s.execute(select(func.pg_advisory_xact_lock(_lock_key("submit", partition, kind))))
                active = s.scalar(
                    select(func.count()).where(
                        JobRow.partition == partition,
                        JobRow.kind == kind,
                        _GROUP,
                        JobRow.status.in_(ACTIVE),
                        JobRow.cancel_requested.is_(False),
                    )
                )
                if (active or 0) >= max_active:
                    return None
            row = s.scalars(
                insert(JobRow)
                .values(
                    id=job_id,
                    group_id=job_id,
                    kind=kind,
                    partition=partition,
                    definition=definition,
                    definition_hash=definition_hash(definition),
                    status=QUEUED,
                    priority=priority,
                    max_attempts=max_attempts,
                    request_url=request_url,
                    transaction_time=transaction_time,
                    released_at=func.now(),
                    client_id=client_id,
                )
                .returning(JobRow)
            ).one()
            return to_info(row)

    def get(self, partition: str, job_id: str) -> JobInfo | None:
        """Return the job ``job_id`` of ``partition`` for the machinery (None for an unknown id or another
        partition's job); lookups on behalf of a client use ``find_group``."""
        with self._session(partition) as s:
            row = s.scalars(select(JobRow).where(JobRow.id == job_id, JobRow.partition == partition)).first()
            return to_info(row) if row is not None else None

    def find_group(self, partition: str, group_id: str, caller: JobCaller) -> JobInfo | None:
        """Return group job ``group_id`` of ``partition`` if ``caller`` may see it, else None (one query)."""
        with self._session(partition) as s:
            row = s.scalars(
                select(JobRow).where(
                    JobRow.id == group_id, JobRow.partition == partition, _GROUP, owned_by(caller)
                )
            ).first()
            return to_info(row) if row is not None else None

    def list_groups(
        self,
        partition: str,
        caller: JobCaller,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[JobInfo]:
        """Return the partition's group jobs ``caller`` may see, newest first, optionally of one kind and
        status."""
        query = select(JobRow).where(JobRow.partition == partition, _GROUP, owned_by(caller))
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if status is not None:
            query = query.where(JobRow.status == status)
        query = query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit)
        with self._session(partition) as s:
            return [to_info(row) for row in s.scalars(query)]

    def parts(self, partition: str, group_id: str) -> list[JobInfo]:
        """Return the processing jobs of a group, in plan order."""
        query = (
            select(JobRow)
            .where(JobRow.partition == partition, JobRow.group_id == group_id, _PART)
            .order_by(JobRow.ordinal, JobRow.id)
        )
        with self._session(partition) as s:
            return [to_info(row) for row in s.scalars(query)]

    def request_cancel(self, partition: str, group_id: str, caller: JobCaller) -> JobInfo | None:
        """Ask a group job to stop: queued work is cancelled at once, running work at its next heartbeat.

        A finished group is marked cancelled and made to expire now (its files may go). Returns the group as
        it is afterwards, or None when the partition has no such group of ``caller`` or it was cancelled
        before.
        """
        with self._session(partition) as s:
            row = s.scalars(
                select(JobRow)
                .where(JobRow.id == group_id, JobRow.partition == partition, _GROUP, owned_by(caller))
                .with_for_update()
            ).first()
            if row is None or row.cancel_requested:
                return None
            row.cancel_requested = True
            if row.status in TERMINAL:
                row.status = CANCELLED
                row.expires_at = func.now()
            elif row.status == QUEUED:
                row.status = CANCELLED
                row.ended_at = func.now()
            parts = update(JobRow).where(JobRow.group_id == group_id, JobRow.partition == partition, _PART)
            s.execute(
                parts.where(JobRow.status == QUEUED).values(
                    status=CANCELLED, cancel_requested=True, ended_at=func.now()
                )
            )
            s.execute(parts.where(JobRow.status == RUNNING).values(cancel_requested=True))
            s.flush()
            s.refresh(row)
            return to_info(row)

    # -- workers ---------------------------------------------------------------------------------------

    def claim(self, partition: str, job_id: str, worker: str) -> JobInfo | None:
        """Take a queued processing job for ``worker`` (version + 1, attempts + 1); None if not claimable."""
        with self._session(partition) as s:
            row = s.scalars(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.partition == partition, _PART)
                .where(JobRow.status == QUEUED, JobRow.cancel_requested.is_(False))
                .values(
                    status=RUNNING,
                    version=JobRow.version + 1,
                    attempts=JobRow.attempts + 1,
                    worker=worker,
                    heartbeat_at=func.now(),
                    started_at=func.coalesce(JobRow.started_at, func.now()),
                    released_at=func.coalesce(JobRow.released_at, func.now()),
                )
                .returning(JobRow)
            ).first()
            return to_info(row) if row is not None else None

    def heartbeat(self, partition: str, job_id: str, version: int, progress: dict[str, Any] | None) -> bool:
        """Record that the job's worker is alive (and its progress); return True when cancel was requested.

        Raises JobFenced when the job is no longer this worker's (taken over, finished or gone).
        """
        values: dict[str, Any] = {"heartbeat_at": func.now()}
        if progress is not None:
            values["progress"] = progress
        with self._session(partition) as s:
            cancel = s.scalars(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.partition == partition, JobRow.version == version)
                .where(JobRow.status.in_((RUNNING, JobStatus.PLANNING.value)))
                .values(**values)
                .returning(JobRow.cancel_requested)
            ).first()
        if cancel is None:
            raise JobFenced()
        return bool(cancel)

    def _finish(
        self, s: Session, partition: str, job_id: str, expected: int, /, **values: Any
    ) -> JobInfo | None:
        row = s.scalars(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.partition == partition, JobRow.version == expected)
            .where(JobRow.status.in_((RUNNING, JobStatus.PLANNING.value)))
            .values(**values)
            .returning(JobRow)
        ).first()
        return to_info(row) if row is not None else None

    def complete(
        self,
        partition: str,
        job_id: str,
        version: int,
        result: dict[str, Any],
        progress: dict[str, Any] | None = None,
    ) -> JobInfo | None:
        """Complete a running job under its version; None when the worker was fenced off (nothing written)."""
        values: dict[str, Any] = {
            "status": JobStatus.COMPLETED.value,
            "result": result,
            "ended_at": func.now(),
        }
        if progress is not None:
            values["progress"] = progress
        with self._session(partition) as s:
            return self._finish(s, partition, job_id, version, error=None, **values)

    def fail(self, partition: str, job_id: str, version: int, error: dict[str, Any]) -> JobInfo | None:
        """Fail a running job for good under its version; None when the worker was fenced off."""
        with self._session(partition) as s:
            return self._finish(
                s, partition, job_id, version, status=FAILED, error=error, ended_at=func.now()
            )

    def mark_cancelled(self, partition: str, job_id: str, version: int) -> JobInfo | None:
        """Record that a running job stopped because it was cancelled."""
        with self._session(partition) as s:
            return self._finish(s, partition, job_id, version, status=CANCELLED, ended_at=func.now())

    def requeue(
        self,
        partition: str,
        job_id: str,
        version: int,
        error: dict[str, Any] | None,
        *,
        delay_seconds: float = 0.0,
        count_attempt: bool = True,
    ) -> JobInfo | None:
        """Put a running job back in the queue (version + 1) to run again after ``delay_seconds``.

        The job keeps its place in the release window (it stays released, from now + delay); the caller
        sends its message again with that delay. With ``count_attempt`` False (a worker shutting down), the
        attempt does not count towards the cap. None when the worker was fenced off.
        """
        values: dict[str, Any] = {
            "status": QUEUED,
            "version": JobRow.version + 1,
            "worker": None,
            "heartbeat_at": None,
            "released_at": func.now() + seconds(delay_seconds),
        }
        if error is not None:
            values["error"] = error
        if not count_attempt:
            values["attempts"] = func.greatest(JobRow.attempts - 1, 0)
        with self._session(partition) as s:
            return self._finish(s, partition, job_id, version, **values)
