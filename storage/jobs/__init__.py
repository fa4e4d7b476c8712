"""The job table: one queue of group and processing jobs for every bulk operation of every partition."""

from __future__ import annotations

from storage.jobs.groups import GroupOps, GroupSummary
from storage.jobs.models import JobRow
from storage.jobs.queue import JobQueueOps
from storage.jobs.sweep import JobRef, SweepOps
from storage.jobs.window import GroupLoad, ReleasedJob, WindowOps, choose_releases


class JobQueue(JobQueueOps, GroupOps, WindowOps, SweepOps):
    """Every operation on the job table, each in a short transaction of its own (see the mixins)."""


__all__ = [
    "GroupLoad",
    "GroupSummary",
    "JobQueue",
    "JobRef",
    "JobRow",
    "ReleasedJob",
    "choose_releases",
]
