"""The release window: which queued processing jobs go to the message broker next.

A processing job is *in flight* from its release until it ends (running, or released and waiting for a
worker). At most ``per_job`` jobs of one group and ``per_partition`` jobs of one partition are in flight at
once. Free slots go round-robin: each one to the partition with the fewest jobs in flight, and within it to
the group with the fewest, so that one tenant's huge job never holds back another tenant's small one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update

from storage.jobs.base import QUEUED, JobStoreBase
from storage.jobs.models import JobRow

#: Advisory lock that serialises releases across orchestrator processes (window counts stay exact).
RELEASE_LOCK = 0x42554C4B5245  # "BULKRE"


@dataclass(frozen=True)
class GroupLoad:
    """One running group's work: how much is in flight and how much waits for release."""

    partition: str
    group_id: str
    priority: int
    created_at: datetime
    in_flight: int
    waiting: int


@dataclass(frozen=True)
class ReleasedJob:
    """A processing job just released: the message to send names its partition and id."""

    kind: str
    partition: str
    job_id: str
    group_id: str
    background: bool = False


def choose_releases(loads: list[GroupLoad], per_job: int, per_partition: int) -> dict[str, int]:
    """Return how many waiting jobs of each group to release now, filling free slots round-robin."""
    partition_load: dict[str, int] = defaultdict(int)
    group_load: dict[str, int] = {}
    waiting: dict[str, int] = {}
    groups: dict[str, list[GroupLoad]] = defaultdict(list)
    for load in loads:
        partition_load[load.partition] += load.in_flight
        group_load[load.group_id] = load.in_flight
        waiting[load.group_id] = load.waiting
        groups[load.partition].append(load)
    picks: dict[str, int] = defaultdict(int)
    while True:
        best: tuple[tuple[int, int, datetime, str], GroupLoad] | None = None
        for partition, members in groups.items():
            if partition_load[partition] >= per_partition:
                continue
            open_groups = [g for g in members if waiting[g.group_id] > 0 and group_load[g.group_id] < per_job]
            if not open_groups:
                continue
            group = min(
                open_groups, key=lambda g: (group_load[g.group_id], -g.priority, g.created_at, g.group_id)
            )
            key = (partition_load[partition], -group.priority, group.created_at, partition)
            if best is None or key < best[0]:
                best = (key, group)
        if best is None:
            return dict(picks)
        group = best[1]
        picks[group.group_id] += 1
        waiting[group.group_id] -= 1
        group_load[group.group_id] += 1
        partition_load[group.partition] += 1


# Every group with work in flight or waiting. In-flight counts come from the small in-flight index; waiting
# work is counted only up to ``cap`` (the per-job window: more could never be released at once), so a group of
# ten thousand queued jobs costs a few index entries, not ten thousand rows, at every release.
_LOADS = text(
    """
    WITH flight AS (
        SELECT partition, group_id, count(*) AS n FROM job
        WHERE id <> group_id AND (status = 'running' OR (status = 'queued' AND released_at IS NOT NULL))
        GROUP BY partition, group_id
    ), open AS (
        SELECT id, partition, priority, created_at FROM job
        WHERE id = group_id AND status = 'running' AND NOT cancel_requested
    )
    SELECT coalesce(o.partition, f.partition), coalesce(o.id, f.group_id), coalesce(o.priority, 0),
           coalesce(o.created_at, now()), coalesce(f.n, 0),
           CASE WHEN o.id IS NULL THEN 0 ELSE (
               SELECT count(*) FROM (
                   SELECT 1 FROM job p
                   WHERE p.group_id = o.id AND p.id <> p.group_id AND p.status = 'queued'
                     AND p.released_at IS NULL AND NOT p.cancel_requested
                   ORDER BY p.priority DESC, p.ordinal
                   LIMIT :cap
               ) AS w
           ) END
    FROM open o FULL JOIN flight f ON f.group_id = o.id
    """
)


class WindowOps(JobStoreBase):
    """Release queued processing jobs within the windows."""

    def loads(self, *, cap: int = 1000) -> list[GroupLoad]:
        """Return every group with processing work in flight or waiting (counted up to ``cap``)."""
        with self._session(None) as s:
            return [GroupLoad(*row) for row in s.execute(_LOADS, {"cap": cap}).all()]

    def release(self, *, per_job: int, per_partition: int) -> list[ReleasedJob]:
        """Mark the next processing jobs released (fairly, within the windows) and return them.

        The caller sends one message per returned job after this returns (the release is committed).
        """
        released: list[ReleasedJob] = []
        with self._session(None) as s:
            s.execute(select(func.pg_advisory_xact_lock(RELEASE_LOCK)))
            loads = [GroupLoad(*row) for row in s.execute(_LOADS, {"cap": per_job}).all()]
            picks = choose_releases(loads, per_job, per_partition)
            for group_id, count in picks.items():
                chosen = (
                    select(JobRow.id)
                    .where(JobRow.group_id == group_id, JobRow.id != JobRow.group_id)
                    .where(JobRow.status == QUEUED, JobRow.released_at.is_(None))
                    .where(JobRow.cancel_requested.is_(False))
                    .order_by(JobRow.priority.desc(), JobRow.ordinal)
                    .limit(count)
                    .with_for_update(skip_locked=True)
                )
                rows = s.execute(
                    update(JobRow)
                    .where(JobRow.id.in_(chosen))
                    .values(released_at=func.now())
                    .returning(
                        JobRow.kind,
                        JobRow.partition,
                        JobRow.id,
                        JobRow.group_id,
                        JobRow.ordinal,
                        JobRow.priority,
                    )
                ).all()
                for kind, partition, job_id, gid, _, priority in sorted(rows, key=lambda r: r[4]):
                    released.append(ReleasedJob(kind, partition, job_id, gid, priority < 0))
        return released

    def unrelease(self, jobs: list[ReleasedJob]) -> None:
        """Take back releases whose messages could not be sent (the next release tries again)."""
        if not jobs:
            return
        with self._session(None) as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id.in_([j.job_id for j in jobs]), JobRow.status == QUEUED)
                .values(released_at=None)
            )
