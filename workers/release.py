"""Release queued processing jobs to the workers, within the windows, fairly across partitions.

Called by the orchestrator after planning (and on every sweep), and by a worker as soon as its processing job
ends: the slot it frees goes at once to whichever partition and job have the fewest jobs in flight.
"""

from __future__ import annotations

import logging

from core.errors import BulkheadError
from storage.jobs import ReleasedJob
from workers.resources import WorkerResources

log = logging.getLogger(__name__)


def release_work(resources: WorkerResources) -> int:
    """Release what the windows allow now and send one message per released job; return how many.

    ``job_window_per_job`` bounds the jobs of one group in flight, ``job_window_per_partition`` those of
    one partition; free slots go first to the partitions (then groups) with the fewest in flight. A message
    that cannot be sent is taken back and released again later.
    """
    settings = resources.settings
    queue = resources.queue
    released = queue.release(
        per_job=max(1, settings.job_window_per_job),
        per_partition=max(1, settings.job_window_per_partition),
    )
    sent = 0
    for n, job in enumerate(released):
        try:
            resources.sender.send_process(job.kind, job.partition, job.job_id, background=job.background)
        except BulkheadError as exc:
            unsent: list[ReleasedJob] = released[n:]
            queue.unrelease(unsent)
            log.warning(
                "%s released jobs not sent (%s); they will be released again", len(unsent), exc.message
            )
            break
        sent += 1
    if sent:
        log.debug("released %s processing jobs", sent)
    return sent
