"""Advance one group job to its next state: plan it, release its work, finish it, fail it or settle a cancel.

``advance_group`` is what the ``orchestrate`` actor does with every message, and what the sweeper does for
groups whose next step is due. It is idempotent: every step is a conditional update, so a duplicated or
replayed message, or two orchestrators at once, change nothing twice.
"""

from __future__ import annotations

import logging

from dramatiq.middleware import Shutdown

from core.errors import BulkheadError, Forbidden, InvalidRequest, Issue, NotFound, Unprocessable
from core.jobs import (
    BACKGROUND_PRIORITY,
    TERMINAL_STATUSES,
    JobCancelled,
    JobFenced,
    JobInfo,
    JobStatus,
    PermanentJobError,
    failure_outcome,
    outcome_of,
)
from core.logs import job_log_context
from core.outcome import operation_outcome
from orchestrator.registry import Planner, planner_for
from workers.heartbeat import JobHeartbeat
from workers.release import release_work
from workers.resources import WorkerResources
from workers.runtime import JobContext, retry_delay, worker_name

log = logging.getLogger(__name__)

_REQUEST_ERRORS = (InvalidRequest, NotFound, Forbidden, Unprocessable)


#: An import range's size in resources is estimated from its bytes (synthetic and example NDJSON: 0.5-1 KiB).
_IMPORT_BYTES_PER_RESOURCE = 1024


def planned_resources(definitions: list[dict[str, object]]) -> int:
    """Return about how many resources a plan's processing jobs cover (from what each planner records)."""
    total = 0
    for d in definitions:
        rows = d.get("estimated_rows", d.get("rows"))
        start, stop = d.get("start"), d.get("stop")
        if isinstance(rows, int):
            total += rows
        elif isinstance(start, int) and isinstance(stop, int):
            total += max(0, stop - start) // _IMPORT_BYTES_PER_RESOURCE
    return total


def lane_priority(resources: WorkerResources, group: JobInfo, definitions: list[dict[str, object]]) -> int:
    """Return the processing jobs' priority: BACKGROUND_PRIORITY for a large job, else the group's."""
    threshold = resources.settings.job_background_resources
    if threshold > 0 and planned_resources(definitions) >= threshold:
        return min(group.priority, BACKGROUND_PRIORITY)
    return group.priority


def _expiry(resources: WorkerResources) -> float:
    return resources.settings.job_expiry_hours * 3600.0


def advance_group(resources: WorkerResources, partition: str, group_id: str) -> str:
    """Take group job ``group_id`` of ``partition`` one step further; return the state it is left in."""
    with job_log_context(partition, group_id):
        queue = resources.queue
        group = queue.get(partition, group_id)
        if group is None or not group.is_group:
            log.info("group %s is gone; nothing to do", group_id)
            return "missing"
        if group.cancel_requested:
            return settle_cancel(resources, group)
        if group.status in TERMINAL_STATUSES:
            return group.status.value
        planner = planner_for(group.kind)
        if planner is None:
            message = f"No planner for jobs of kind {group.kind!r} is installed on this orchestrator"
            queue.fail_group(partition, group_id, failure_outcome(message), expires_in=_expiry(resources))
            log.error("%s", message)
            return JobStatus.FAILED.value
        if group.status == JobStatus.QUEUED:
            state = _plan(resources, planner, group)
            if state != JobStatus.RUNNING.value:
                return state
        elif group.status == JobStatus.PLANNING:
            return JobStatus.PLANNING.value
        return _follow(resources, planner, group)


def settle_cancel(resources: WorkerResources, group: JobInfo) -> str:
    """End a cancelled group once its work stopped, and delete what it wrote; else wait."""
    queue = resources.queue
    settled = queue.settle_cancelled(group.partition, group.id, expires_in=_expiry(resources))
    if settled is None or settled.status != JobStatus.CANCELLED:
        release_work(resources)
        return "cancelling"
    store = resources.object_store
    removed = store.delete_prefix(store.job_prefix(group.partition, group.id))
    log.info("group %s cancelled; %s objects deleted", group.id, removed)
    release_work(resources)
    return JobStatus.CANCELLED.value


def _plan(resources: WorkerResources, planner: Planner, group: JobInfo) -> str:
    queue = resources.queue
    settings = resources.settings
    job = queue.start_planning(group.partition, group.id, worker_name())
    if job is None:
        return "skipped"
    beat = JobHeartbeat(queue, job.partition, job.id, job.version, settings.job_heartbeat_seconds)
    ctx = JobContext.of(job, resources, beat)
    log.info("planning %s job %s (attempt %s of %s)", job.kind, job.id, job.attempts, job.max_attempts)
    try:
        try:
            beat.start()
            definitions = list(planner.plan(ctx, job))
        finally:
            beat.stop()
        beat.check()
    except JobCancelled:
        queue.mark_cancelled(job.partition, job.id, job.version)
        return settle_cancel(resources, job)
    except JobFenced:
        log.warning("planning of %s was taken over by another orchestrator", job.id)
        return "fenced"
    except PermanentJobError as exc:
        return _fail(resources, job, operation_outcome(exc.issues), exc.message)
    except _REQUEST_ERRORS as exc:
        return _fail(resources, job, outcome_of(exc), exc.message)
    except Shutdown:
        queue.requeue(job.partition, job.id, job.version, None, count_attempt=False)
        _resend(resources, job, 0.0)
        return JobStatus.QUEUED.value
    except Exception as exc:
        log.exception("planning of %s failed (attempt %s of %s)", job.id, job.attempts, job.max_attempts)
        why = f"{type(exc).__name__}: {exc}"
        if job.attempts >= job.max_attempts:
            return _fail(
                resources, job, failure_outcome(f"Planning gave up after {job.attempts} attempts: {why}"), why
            )
        delay = retry_delay(settings, job.attempts)
        queue.requeue(job.partition, job.id, job.version, failure_outcome(why), delay_seconds=delay)
        _resend(resources, job, delay)
        return JobStatus.QUEUED.value
    priority = lane_priority(resources, job, definitions)
    count = queue.store_plan(
        job.partition,
        job.id,
        job.version,
        definitions,
        max_attempts=settings.job_max_attempts,
        priority=priority,
    )
    if count is None:
        current = queue.get(job.partition, job.id)
        if current is not None and current.cancel_requested:
            return settle_cancel(resources, current)
        return "fenced"
    lane = "background" if priority < 0 else "foreground"
    log.info("planned %s job %s: %s processing jobs (%s lane)", job.kind, job.id, count, lane)
    return JobStatus.RUNNING.value


def _fail(resources: WorkerResources, group: JobInfo, error: dict[str, object], why: str) -> str:
    resources.queue.fail_group(group.partition, group.id, error, expires_in=_expiry(resources))
    log.error("%s job %s failed: %s", group.kind, group.id, why)
    release_work(resources)
    return JobStatus.FAILED.value


def _resend(resources: WorkerResources, group: JobInfo, delay: float) -> None:
    try:
        resources.sender.send_orchestrate(group.partition, group.id, delay_seconds=delay)
    except BulkheadError as exc:
        log.warning("orchestrate for %s not sent (%s); the sweeper will", group.id, exc.message)


def _part_failure(group: JobInfo, part: JobInfo, total: int) -> dict[str, object]:
    """Return the group's OperationOutcome when one of its processing jobs failed for good.

    The part's own issues come first (a failure the request caused keeps its status), then the context.
    """
    issues = [
        Issue(
            diagnostics=str(item.get("diagnostics", "")),
            code=str(item.get("code", "exception")),
            severity=str(item.get("severity", "error")),
        )
        for item in (part.error or {}).get("issue", [])
    ]
    issues.append(
        Issue(
            diagnostics=f"The {group.kind} job failed: processing job {part.ordinal + 1} of {total} failed",
            code="exception",
        )
    )
    return operation_outcome(issues)


def _follow(resources: WorkerResources, planner: Planner, group: JobInfo) -> str:
    """Fail, finish or feed a running group."""
    queue = resources.queue
    failed, active = queue.group_state(group.partition, group.id)
    if failed:
        part = queue.first_failure(group.partition, group.id)
        assert part is not None
        error = _part_failure(group, part, len(queue.parts(group.partition, group.id)))
        return _fail(resources, group, error, f"processing job {part.id} failed")
    if active:
        release_work(resources)
        return JobStatus.RUNNING.value
    parts = queue.parts(group.partition, group.id)
    ctx = JobContext.of(group, resources, None)
    try:
        result = planner.finish(ctx, group, parts)
    except Exception as exc:
        log.exception("finishing %s job %s failed", group.kind, group.id)
        return _fail(resources, group, outcome_of(exc), str(exc))
    if queue.complete_group(group.partition, group.id, result, expires_in=_expiry(resources)) is None:
        return "skipped"
    log.info("%s job %s completed (%s processing jobs)", group.kind, group.id, len(parts))
    release_work(resources)
    return JobStatus.COMPLETED.value
