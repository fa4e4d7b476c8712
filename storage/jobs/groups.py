"""Group (orchestrator) job operations: planning, storing the plan, progress, and the group's end."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.jobs import JobInfo, definition_hash, new_job_id
from storage.jobs.base import ACTIVE, CANCELLED, COMPLETED, FAILED, PLANNING, QUEUED, RUNNING, JobStoreBase
from storage.jobs.models import JobRow, to_info
from storage.jobs.queue import seconds

_GROUP = JobRow.id == JobRow.group_id
_PART = JobRow.id != JobRow.group_id


@dataclass(frozen=True)
class GroupSummary:
    """The processing jobs of a group, counted by status, with their numeric progress summed."""

    total: int = 0
    queued: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    progress: dict[str, int | float] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """Return how many processing jobs reached an end."""
        return self.completed + self.failed + self.cancelled

    @property
    def active(self) -> int:
        """Return how many processing jobs are queued or running."""
        return self.queued + self.running


class GroupOps(JobStoreBase):
    """Plan, summarise and end group jobs."""

    def start_planning(self, partition: str, group_id: str, worker: str) -> JobInfo | None:
        """Claim a queued group job for planning (version + 1, attempts + 1); None if not claimable."""
        with self._session(partition) as s:
            row = s.scalars(
                update(JobRow)
                .where(JobRow.id == group_id, JobRow.partition == partition, _GROUP)
                .where(JobRow.status == QUEUED, JobRow.cancel_requested.is_(False))
                .values(
                    status=PLANNING,
                    version=JobRow.version + 1,
                    attempts=JobRow.attempts + 1,
                    worker=worker,
                    heartbeat_at=func.now(),
                    started_at=func.coalesce(JobRow.started_at, func.now()),
                )
                .returning(JobRow)
            ).first()
            return to_info(row) if row is not None else None

    def store_plan(
        self,
        partition: str,
        group_id: str,
        version: int,
        definitions: Iterable[dict[str, Any]],
        *,
        max_attempts: int,
        priority: int | None = None,
    ) -> int | None:
        """Store the processing jobs of a plan and start the group, in one transaction.

        The processing jobs take ``priority`` (the group's when None; a negative one is the background lane).
        Idempotent: a definition already stored for the group (same hash) is not added again. Returns the
        group's number of processing jobs; None when the planner was fenced off or the group was cancelled
        meanwhile (then nothing is stored, and a cancelled group ends as cancelled).
        """
        with self._session(partition) as s:
            group = s.scalars(
                select(JobRow)
                .where(JobRow.id == group_id, JobRow.partition == partition, _GROUP)
                .with_for_update()
            ).first()
            if group is None or group.version != version or group.status != PLANNING:
                return None
            if group.cancel_requested:
                group.status = CANCELLED
                group.ended_at = func.now()
                return None
            rows = [
                {
                    "id": new_job_id(),
                    "group_id": group_id,
                    "kind": group.kind,
                    "partition": partition,
                    "ordinal": n,
                    "definition": definition,
                    "definition_hash": definition_hash(definition),
                    "status": QUEUED,
                    "priority": group.priority if priority is None else priority,
                    "max_attempts": max_attempts,
                    "progress": {},
                }
                for n, definition in enumerate(definitions)
            ]
            if rows:  # an empty executemany would insert DEFAULT VALUES
                s.execute(
                    pg_insert(JobRow).on_conflict_do_nothing(
                        index_elements=[JobRow.group_id, JobRow.definition_hash], index_where=_PART
                    ),
                    rows,
                )
            group.status = RUNNING
            group.worker = None
            group.heartbeat_at = None
            s.flush()
            count = s.scalar(select(func.count()).where(JobRow.group_id == group_id, _PART))
            return int(count or 0)

    def summary(self, partition: str, group_id: str) -> GroupSummary:
        """Count a group's processing jobs by status and sum their numeric progress."""
        with self._session(partition) as s:
            counts = dict(
                s.execute(
                    select(JobRow.status, func.count())
                    .where(JobRow.group_id == group_id, JobRow.partition == partition, _PART)
                    .group_by(JobRow.status)
                ).all()
            )
            sums = s.execute(
                text(
                    """
                    SELECT p.key, sum((p.value)::numeric)
                    FROM job j, jsonb_each(j.progress) AS p
                    WHERE j.group_id = :g AND j.partition = :p AND j.id <> j.group_id
                      AND jsonb_typeof(p.value) = 'number'
                    GROUP BY p.key
                    """
                ),
                {"g": group_id, "p": partition},
            ).all()
        progress: dict[str, int | float] = {}
        for key, value in sums:
            progress[str(key)] = int(value) if value == int(value) else float(value)
        return GroupSummary(
            total=sum(int(n) for n in counts.values()),
            queued=int(counts.get(QUEUED, 0)),
            running=int(counts.get(RUNNING, 0)),
            completed=int(counts.get(COMPLETED, 0)),
            failed=int(counts.get(FAILED, 0)),
            cancelled=int(counts.get(CANCELLED, 0)),
            progress=progress,
        )

    def group_state(self, partition: str, group_id: str) -> tuple[bool, bool]:
        """Return (has a failed processing job, has a queued or running one), cheaply (two index probes)."""
        with self._session(partition) as s:
            row = s.execute(
                text(
                    """
                    SELECT
                      EXISTS (SELECT 1 FROM job WHERE group_id = :g AND partition = :p AND id <> group_id
                              AND status = 'failed'),
                      EXISTS (SELECT 1 FROM job WHERE group_id = :g AND partition = :p
                              AND status IN ('queued', 'planning', 'running') AND id <> group_id)
                    """
                ),
                {"g": group_id, "p": partition},
            ).one()
            return bool(row[0]), bool(row[1])

    def first_failure(self, partition: str, group_id: str) -> JobInfo | None:
        """Return the first processing job of a group that failed, if any."""
        with self._session(partition) as s:
            row = s.scalars(
                select(JobRow)
                .where(JobRow.group_id == group_id, JobRow.partition == partition, _PART)
                .where(JobRow.status == FAILED)
                .order_by(JobRow.ended_at, JobRow.ordinal)
                .limit(1)
            ).first()
            return to_info(row) if row is not None else None

    def complete_group(
        self, partition: str, group_id: str, result: dict[str, Any], *, expires_in: float
    ) -> JobInfo | None:
        """Complete a running group with its result; None when it is not running (or being cancelled)."""
        with self._session(partition) as s:
            row = s.scalars(
                update(JobRow)
                .where(JobRow.id == group_id, JobRow.partition == partition, _GROUP)
                .where(JobRow.status == RUNNING, JobRow.cancel_requested.is_(False))
                .values(
                    status=COMPLETED,
                    result=result,
                    error=None,
                    ended_at=func.now(),
                    expires_at=func.now() + seconds(expires_in),
                )
                .returning(JobRow)
            ).first()
            return to_info(row) if row is not None else None

    def fail_group(
        self, partition: str, group_id: str, error: dict[str, Any], *, expires_in: float
    ) -> JobInfo | None:
        """Fail an active group with an OperationOutcome; cancel its remaining processing jobs."""
        with self._session(partition) as s:
            row = s.scalars(
                update(JobRow)
                .where(JobRow.id == group_id, JobRow.partition == partition, _GROUP)
                .where(JobRow.status.in_(ACTIVE))
                .values(
                    status=FAILED,
                    error=error,
                    ended_at=func.now(),
                    expires_at=func.now() + seconds(expires_in),
                    worker=None,
                    heartbeat_at=None,
                )
                .returning(JobRow)
            ).first()
            if row is None:
                return None
            parts = update(JobRow).where(JobRow.group_id == group_id, JobRow.partition == partition, _PART)
            s.execute(
                parts.where(JobRow.status == QUEUED).values(
                    status=CANCELLED, cancel_requested=True, ended_at=func.now()
                )
            )
            s.execute(parts.where(JobRow.status == RUNNING).values(cancel_requested=True))
            return to_info(row)

    def settle_cancelled(self, partition: str, group_id: str, *, expires_in: float) -> JobInfo | None:
        """End a group whose cancel was requested once none of its processing jobs runs any more.

        Returns the group when it is cancelled and settled; None while work still runs (or no cancel).
        """
        with self._session(partition) as s:
            group = s.scalars(
                select(JobRow)
                .where(JobRow.id == group_id, JobRow.partition == partition, _GROUP)
                .with_for_update()
            ).first()
            if group is None or not group.cancel_requested or group.status == PLANNING:
                return None
            running = s.scalar(
                select(func.count()).where(
                    JobRow.group_id == group_id,
                    JobRow.partition == partition,
                    _PART,
                    JobRow.status == RUNNING,
                )
            )
            if running:
                return None
            if group.status in (QUEUED, RUNNING):
                group.status = CANCELLED
                group.ended_at = func.now()
            if group.expires_at is None:
                group.expires_at = func.now() + seconds(expires_in)
            s.flush()
            s.refresh(group)
            return to_info(group)
