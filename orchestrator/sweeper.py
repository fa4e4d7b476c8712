"""The sweeper: nothing stays in progress forever, nothing waits for a message that was lost.

One round (``sweep``), run by the orchestrator every ``job_sweep_seconds`` and callable directly:

1. Jobs whose heartbeat is older than ``job_stale_seconds`` (the worker died, or hangs), or older than
   three heartbeat intervals when their worker process was on this host and is gone (a crash, seen early):
   a cancelled one ends as cancelled; one with attempts left is taken over (version + 1, so the old worker
   is fenced off) and queued again; one whose attempts are used up fails with an OperationOutcome saying
   why (and so does its group, at its next step).
2. Messages sent long ago and never taken (a broker restart lost them): sent again. A duplicate is harmless.
3. Groups whose next step is due (all work ended, a part failed, a cancel settled): advanced.
4. Free window slots: released.
5. Groups past their expiry: their objects and rows deleted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from core.errors import BulkheadError
from core.jobs import JobInfo, failure_outcome
from orchestrator.lifecycle import advance_group
from workers.release import release_work
from workers.resources import WorkerResources

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one round of the sweeper did."""

    swept: bool = True
    taken_over: int = 0
    failed: int = 0
    cancelled: int = 0
    resent: int = 0
    advanced: int = 0
    released: int = 0
    expired: int = 0


def sweep(resources: WorkerResources) -> SweepReport:
    """Run one round of the sweeper (skipped when another orchestrator is sweeping right now)."""
    with resources.queue.sweeping() as taken:
        if not taken:
            return SweepReport(swept=False)
        report = SweepReport()
        _stale(resources, report)
        _lost(resources, report)
        for partition, group_id in resources.queue.groups_to_advance():
            advance_group(resources, partition, group_id)
            report.advanced += 1
        report.released = release_work(resources)
        _expire(resources, report)
    if report.taken_over or report.failed or report.cancelled or report.resent or report.expired:
        log.info("sweep: %s", report)
    return report


def _gone_here(worker: str | None, host: str) -> bool:
    """Return whether ``worker`` (``host:pid:thread``) names a process of this host that no longer exists."""
    parts = (worker or "").split(":")
    if len(parts) < 2 or parts[0] != host or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _silent_jobs(resources: WorkerResources) -> list[tuple[JobInfo, str]]:
    """Return the jobs to take over, each with why: no heartbeat for ``job_stale_seconds``, or no heartbeat
    for three heartbeat intervals from a worker process of this host that is gone (a crash seen at once)."""
    settings = resources.settings
    stale_for = settings.job_stale_seconds
    found = {
        job.id: (
            job,
            f"its worker ({job.worker or 'unknown'}) sent no heartbeat for more than {stale_for:.0f} s",
        )
        for job in resources.queue.stale(stale_for)
    }
    host = socket.gethostname()
    quiet_for = 3 * settings.job_heartbeat_seconds
    if quiet_for < stale_for:
        for job in resources.queue.silent_on_host(quiet_for, host):
            if job.id not in found and _gone_here(job.worker, host):
                found[job.id] = (job, f"its worker process ({job.worker}) is gone")
    return list(found.values())


def _stale(resources: WorkerResources, report: SweepReport) -> None:
    queue = resources.queue
    for job, silent in _silent_jobs(resources):
        extra = {"partition": job.partition, "job_id": job.id}
        if job.cancel_requested:
            if queue.cancel_stale(job) is not None:
                report.cancelled += 1
                log.info("job %s cancelled: %s", job.id, silent, extra=extra)
        elif job.attempts >= job.max_attempts:
            message = f"Gave up after {job.attempts} attempts: {silent}"
            if _give_up(resources, job, message):
                report.failed += 1
                log.error("job %s failed: %s", job.id, message, extra=extra)
        else:
            error = failure_outcome(f"Attempt {job.attempts} of {job.max_attempts} was taken over: {silent}")
            if queue.requeue(job.partition, job.id, job.version, error) is not None:
                report.taken_over += 1
                log.warning("job %s taken over: %s", job.id, silent, extra=extra)
                _send(resources, job)


def _give_up(resources: WorkerResources, job: JobInfo, message: str) -> bool:
    queue = resources.queue
    if job.is_group:
        expires = resources.settings.job_expiry_hours * 3600.0
        return (
            queue.fail_group(job.partition, job.id, failure_outcome(message), expires_in=expires) is not None
        )
    return queue.fail(job.partition, job.id, job.version, failure_outcome(message)) is not None


def _send(resources: WorkerResources, job: JobInfo) -> None:
    try:
        if job.is_group:
            resources.sender.send_orchestrate(job.partition, job.id)
        else:
            resources.sender.send_process(job.kind, job.partition, job.id, background=job.priority < 0)
    except BulkheadError as exc:
        log.warning("message for job %s not sent (%s); next sweep", job.id, exc.message)


def _lost(resources: WorkerResources, report: SweepReport) -> None:
    parts, groups = resources.queue.lost_messages(resources.settings.job_stale_seconds)
    try:
        for ref in parts:
            resources.sender.send_process(ref.kind, ref.partition, ref.job_id, background=ref.background)
            report.resent += 1
        for ref in groups:
            resources.sender.send_orchestrate(ref.partition, ref.job_id)
            report.resent += 1
    except BulkheadError as exc:
        log.warning("messages not sent again (%s); next sweep", exc.message)


def _expire(resources: WorkerResources, report: SweepReport) -> None:
    queue = resources.queue
    for partition, group_id in queue.expired():
        try:
            store = resources.object_store
            store.delete_prefix(store.job_prefix(partition, group_id))
        except BulkheadError as exc:
            log.warning("objects of expired job %s not deleted (%s); next sweep", group_id, exc.message)
            continue
        queue.delete_group(partition, group_id)
        report.expired += 1
        log.info(
            "job %s expired and was deleted", group_id, extra={"partition": partition, "job_id": group_id}
        )


class Sweeper:
    """Run ``sweep`` on a timer thread until stopped."""

    def __init__(self, resources: WorkerResources, interval: float | None = None):
        self.resources = resources
        self.interval = max(0.1, interval if interval is not None else resources.settings.job_sweep_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        """Start sweeping."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current round."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sweep(self.resources)
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", self.interval)
            self._stop.wait(self.interval)
