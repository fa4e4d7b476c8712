"""Run one processing job: claim, heartbeat, process, then complete, fail or retry under the job's version.

``run_processing_job`` is what every processing actor does with its message. It is idempotent: a message
for a job that is not queued (a duplicate, a job already done, cancelled or running elsewhere) does
nothing. A worker whose job was taken over cannot write its end: every write names the version its claim
returned.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from dramatiq.middleware import Shutdown, TimeLimitExceeded

from core.errors import BulkheadError, Forbidden, InvalidRequest, NotFound, Unprocessable
from core.jobs import (
    JobCancelled,
    JobFenced,
    JobInfo,
    PermanentJobError,
    failure_outcome,
    outcome_of,
)
from core.logs import job_log_context
from core.metrics import count_job_result, count_job_transition
from core.outcome import operation_outcome
from core.settings import Settings
from storage import Database
from storage.objectstore import ObjectStore
from workers.background import run_in_background
from workers.heartbeat import JobHeartbeat
from workers.registry import processor_for
from workers.resources import WorkerResources

log = logging.getLogger(__name__)

#: Errors of the request itself: retrying cannot help, the job fails at once and keeps their status.
#: (Conflict is not one of them: a concurrent change is worth another attempt.)
_REQUEST_ERRORS = (InvalidRequest, NotFound, Forbidden, Unprocessable)


def worker_name() -> str:
    """Return who is working: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"[:200]


@dataclass
class JobContext:
    """What a processor or planner gets: the job's partition and ids, shared resources, heartbeat."""

    partition: str
    job_id: str
    group_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore
    beat: JobHeartbeat | None = None

    @classmethod
    def of(cls, job: JobInfo, resources: WorkerResources, beat: JobHeartbeat | None) -> JobContext:
        """Return the context of ``job`` on ``resources``."""
        return cls(
            partition=job.partition,
            job_id=job.id,
            group_id=job.group_id,
            settings=resources.settings,
            database=resources.database,
            object_store=resources.object_store,
            beat=beat,
        )

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress; raise JobCancelled when cancel was requested, JobFenced when taken over."""
        if self.beat is not None:
            self.beat.report(progress)


def retry_delay(settings: Settings, attempts: int) -> float:
    """Return the back-off before attempt ``attempts + 1``: doubling from the base, capped."""
    base = max(0.0, settings.job_retry_backoff_seconds)
    return float(min(settings.job_retry_backoff_max_seconds, base * 2 ** max(0, attempts - 1)))


def run_processing_job(resources: WorkerResources, partition: str, job_id: str) -> str:
    """Run processing job ``job_id`` of ``partition`` if it can be claimed; return what became of it.

    The answer is one of ``skipped`` (not claimable: a duplicate message, say), ``completed``, ``failed``,
    ``cancelled``, ``fenced`` (taken over meanwhile: nothing was written) and ``requeued``.
    """
    with job_log_context(partition, job_id):
        queue = resources.queue
        job = queue.claim(partition, job_id, worker_name())
        if job is None:
            log.info("job %s is not queued (duplicate message, done or cancelled): nothing to do", job_id)
            return "skipped"
        outcome = _run_claimed(resources, job)
        count_job_transition(job.kind, outcome, partition)
        if outcome in ("completed", "failed", "cancelled"):
            _after(resources, job, outcome)
        return outcome


def _after(resources: WorkerResources, job: JobInfo, outcome: str) -> None:
    """Hand the freed slot to the next job (fairly), and wake the orchestrator when the group's turn came.

    The orchestrator is told when this job failed (its group fails) or when nothing of the group is queued
    or running any more (finish, or settle a cancel); a lost message is covered by the sweeper.
    """
    from workers.release import release_work

    try:
        release_work(resources)
        failed, active = resources.queue.group_state(job.partition, job.group_id)
        if outcome == "failed" or failed or not active:
            resources.sender.send_orchestrate(job.partition, job.group_id)
    except BulkheadError as exc:
        log.warning("after job %s: %s; the sweeper will take it from here", job.id, exc.message)


def _run_claimed(resources: WorkerResources, job: JobInfo) -> str:
    queue = resources.queue
    processor = processor_for(job.kind)
    if processor is None:
        message = f"No processor for jobs of kind {job.kind!r} is installed on this worker"
        queue.fail(job.partition, job.id, job.version, failure_outcome(message))
        log.error("%s", message)
        return "failed"
    beat = JobHeartbeat(queue, job.partition, job.id, job.version, resources.settings.job_heartbeat_seconds)
    try:
        # Inside the handlers: the first job of a process builds the object store client here (slow
        # enough for a shutdown to arrive), and a claimed job must never be left running by a failure.
        ctx = JobContext.of(job, resources, beat)
        log.info("job %s started (attempt %s of %s)", job.id, job.attempts, job.max_attempts)
        try:
            beat.start()
            if job.priority < 0:
                nice = resources.settings.job_background_nice
                result = run_in_background(nice, lambda: processor.process(ctx, job))
            else:
                result = processor.process(ctx, job)
        finally:
            beat.stop()
        beat.check()
        if queue.complete(job.partition, job.id, job.version, result, beat.progress or None) is None:
            log.warning("job %s was taken over while it ran; its result is dropped", job.id)
            return "fenced"
        log.info("job %s completed", job.id)
        count_job_result(job.kind, job.partition, result)
        return "completed"
    except JobCancelled:
        queue.mark_cancelled(job.partition, job.id, job.version)
        log.info("job %s stopped: cancelled", job.id)
        return "cancelled"
    except JobFenced:
        log.warning("job %s stopped: taken over by another worker", job.id)
        return "fenced"
    except PermanentJobError as exc:
        return _fail(resources, job, operation_outcome(exc.issues), exc.message)
    except _REQUEST_ERRORS as exc:
        return _fail(resources, job, outcome_of(exc), exc.message)
    except Shutdown:
        queue.requeue(job.partition, job.id, job.version, None, count_attempt=False)
        log.info("job %s put back in the queue: this worker is shutting down", job.id)
        _resend(resources, job, 0.0)
        return "requeued"
    except TimeLimitExceeded:
        limit = resources.settings.job_time_limit_seconds
        return _retry(resources, job, f"The job ran longer than its time limit ({limit:.0f} s)")
    except Exception as exc:
        log.exception("job %s failed (attempt %s of %s)", job.id, job.attempts, job.max_attempts)
        return _retry(resources, job, f"{type(exc).__name__}: {exc}")


def _fail(resources: WorkerResources, job: JobInfo, error: dict[str, Any], why: str) -> str:
    if resources.queue.fail(job.partition, job.id, job.version, error) is None:
        return "fenced"
    log.error("job %s failed for good: %s", job.id, why)
    return "failed"


def _retry(resources: WorkerResources, job: JobInfo, why: str) -> str:
    """Requeue the job with back-off, or fail it when its attempts are used up."""
    if job.attempts >= job.max_attempts:
        message = f"Gave up after {job.attempts} attempts; the last one failed: {why}"
        return _fail(resources, job, failure_outcome(message), message)
    delay = retry_delay(resources.settings, job.attempts)
    error = failure_outcome(f"Attempt {job.attempts} of {job.max_attempts} failed: {why}")
    if resources.queue.requeue(job.partition, job.id, job.version, error, delay_seconds=delay) is None:
        return "fenced"
    log.warning("job %s will run again in %.1f s: %s", job.id, delay, why)
    _resend(resources, job, delay)
    return "requeued"


def _resend(resources: WorkerResources, job: JobInfo, delay: float) -> None:
    try:
        resources.sender.send_process(
            job.kind, job.partition, job.id, background=job.priority < 0, delay_seconds=delay
        )
    except BulkheadError as exc:
        log.warning(
            "job %s requeued but its message was not sent (%s); the sweeper will", job.id, exc.message
        )
