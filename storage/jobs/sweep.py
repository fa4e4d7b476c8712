"""What the sweeper asks of the job table: stale heartbeats, lost messages, groups to advance, expiry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update

from core.jobs import JobInfo
from storage.jobs.base import CANCELLED, PLANNING, QUEUED, RUNNING, JobStoreBase
from storage.jobs.models import JobRow, to_info
from storage.jobs.queue import seconds


@dataclass(frozen=True)
class JobRef:
    """Enough to send a job's message again: its kind, partition, id and group."""

    kind: str
    partition: str
    job_id: str
    group_id: str
    background: bool = False


_TO_ADVANCE = text(
    """
    SELECT g.partition, g.id FROM job g
    WHERE g.id = g.group_id AND g.status IN ('queued', 'running')
      AND (
        (g.status = 'running' AND NOT EXISTS (
            SELECT 1 FROM job p WHERE p.group_id = g.id AND p.id <> p.group_id
              AND p.status IN ('queued', 'running')))
        OR (g.status = 'running' AND EXISTS (
            SELECT 1 FROM job p WHERE p.group_id = g.id AND p.id <> p.group_id AND p.status = 'failed'))
        OR (g.cancel_requested AND NOT EXISTS (
            SELECT 1 FROM job p WHERE p.group_id = g.id AND p.id <> p.group_id AND p.status = 'running'))
      )
    ORDER BY g.created_at
    LIMIT :limit
    """
)


#: Session-level advisory lock held by the one sweeper sweeping (others skip their round).
SWEEP_LOCK = 0x42554C4B5357  # "BULKSW"


class SweepOps(JobStoreBase):
    """Find what went wrong or was left behind, across partitions."""

    @contextmanager
    def sweeping(self) -> Iterator[bool]:
        """Hold the sweeper's lock for the block if no other sweeper holds it; yield whether it was taken."""
        with self.database.engine.connect() as conn:
            taken = bool(conn.execute(select(func.pg_try_advisory_lock(SWEEP_LOCK))).scalar())
            conn.commit()
            try:
                yield taken
            finally:
                if taken:
                    conn.execute(select(func.pg_advisory_unlock(SWEEP_LOCK)))
                    conn.commit()

    def stale(self, stale_seconds: float, *, limit: int = 500) -> list[JobInfo]:
        """Return running processing jobs and planning groups whose heartbeat is older than the limit."""
        with self._session(None) as s:
            rows = s.scalars(
                select(JobRow)
                .where(JobRow.status.in_((RUNNING, PLANNING)))
                .where(JobRow.heartbeat_at < func.now() - seconds(stale_seconds))
                .order_by(JobRow.heartbeat_at)
                .limit(limit)
            )
            return [to_info(row) for row in rows]

    def silent_on_host(self, silent_seconds: float, host: str, *, limit: int = 500) -> list[JobInfo]:
        """Return running jobs held by workers of ``host`` (ids ``host:pid:thread``) whose heartbeat is older
        than ``silent_seconds``: the caller checks whether those processes still exist."""
        with self._session(None) as s:
            rows = s.scalars(
                select(JobRow)
                .where(JobRow.status.in_((RUNNING, PLANNING)))
                .where(JobRow.heartbeat_at < func.now() - seconds(silent_seconds))
                .where(JobRow.worker.startswith(f"{host}:", autoescape=True))
                .order_by(JobRow.heartbeat_at)
                .limit(limit)
            )
            return [to_info(row) for row in rows]

    def cancel_stale(self, job: JobInfo) -> JobInfo | None:
        """End a stale job whose cancel was requested: nobody is left to see the request."""
        with self._session(job.partition) as s:
            row = s.scalars(
                update(JobRow)
                .where(JobRow.id == job.id, JobRow.partition == job.partition, JobRow.version == job.version)
                .where(JobRow.status.in_((RUNNING, PLANNING)))
                .values(status=CANCELLED, ended_at=func.now(), worker=None)
                .returning(JobRow)
            ).first()
            return to_info(row) if row is not None else None

    def lost_messages(self, stale_seconds: float, *, limit: int = 500) -> tuple[list[JobRef], list[JobRef]]:
        """Return processing jobs and groups whose message was sent long ago and never taken.

        Their send time is reset to now (the caller sends again): a message lost with a broker restart is
        replaced; a message that was only slow arrives twice, and the second claim does nothing.
        """
        old = func.now() - seconds(stale_seconds)
        with self._session(None) as s:
            parts = s.execute(
                update(JobRow)
                .where(
                    JobRow.id.in_(
                        select(JobRow.id)
                        .where(JobRow.id != JobRow.group_id, JobRow.status == QUEUED)
                        .where(JobRow.released_at < old, JobRow.cancel_requested.is_(False))
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                )
                .values(released_at=func.now())
                .returning(JobRow.kind, JobRow.partition, JobRow.id, JobRow.group_id, JobRow.priority < 0)
            ).all()
            groups = s.execute(
                update(JobRow)
                .where(
                    JobRow.id.in_(
                        select(JobRow.id)
                        .where(JobRow.id == JobRow.group_id, JobRow.status == QUEUED)
                        .where(func.coalesce(JobRow.released_at, JobRow.created_at) < old)
                        .where(JobRow.cancel_requested.is_(False))
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                )
                .values(released_at=func.now())
                .returning(JobRow.kind, JobRow.partition, JobRow.id, JobRow.group_id, JobRow.priority < 0)
            ).all()
        return [JobRef(*row) for row in parts], [JobRef(*row) for row in groups]

    def groups_to_advance(self, *, limit: int = 500) -> list[tuple[str, str]]:
        """Return (partition, group id) of groups whose next step is due: finish, fail or settle a cancel."""
        with self._session(None) as s:
            return [(str(p), str(g)) for p, g in s.execute(_TO_ADVANCE, {"limit": limit}).all()]

    def expired(self, *, limit: int = 100) -> list[tuple[str, str]]:
        """Return (partition, group id) of group jobs past their expiry."""
        with self._session(None) as s:
            rows = s.execute(
                select(JobRow.partition, JobRow.id)
                .where(JobRow.id == JobRow.group_id, JobRow.expires_at < func.now())
                .order_by(JobRow.expires_at)
                .limit(limit)
            ).all()
            return [(str(p), str(g)) for p, g in rows]

    def delete_group(self, partition: str, group_id: str) -> int:
        """Delete a group job and its processing jobs; return how many rows went."""
        with self._session(partition) as s:
            result = s.execute(
                delete(JobRow).where(JobRow.group_id == group_id, JobRow.partition == partition)
            )
            return int(getattr(result, "rowcount", 0) or 0)
