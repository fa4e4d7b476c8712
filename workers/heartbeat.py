"""The heartbeat of a claimed job: a timer thread, independent of the job's own progress reports.

Every ``job_heartbeat_seconds`` the timer records that the job is alive (under the job's version). When it
learns that the job was cancelled, or taken over by another worker, it interrupts the job's thread with
JobCancelled or JobFenced (an asynchronous exception, delivered at the thread's next Python instruction), so
that work stops at the next heartbeat even if the job never reports progress. A job that does report
(``ctx.heartbeat(progress)``) gets the same exceptions raised synchronously.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from dramatiq.middleware.threading import raise_thread_exception

from core.jobs import JobCancelled, JobFenced, JobInterrupted

log = logging.getLogger(__name__)

#: The least time between two writes of reported progress (the timer writes at its own pace anyway).
MIN_PROGRESS_INTERVAL = 1.0


class HeartbeatStore(Protocol):
    """Where heartbeats go (the job queue)."""

    def heartbeat(self, partition: str, job_id: str, version: int, progress: dict[str, Any] | None) -> bool:
        """Record a heartbeat; return True when cancel was requested; raise JobFenced when taken over."""
        ...


class JobHeartbeat:
    """Keep one claimed job alive from a timer thread; stop its thread on cancel or takeover."""

    def __init__(
        self,
        store: HeartbeatStore,
        partition: str,
        job_id: str,
        version: int,
        interval: float,
        *,
        interrupt: bool = True,
    ):
        self.store = store
        self.partition = partition
        self.job_id = job_id
        self.version = version
        self.interval = max(0.05, float(interval))
        self.interrupt = interrupt
        self.cancelled = False
        self.fenced = False
        self.progress: dict[str, Any] = {}
        self._target = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = True
        self._stop = threading.Event()
        self._last_write = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def start(self) -> None:
        """Start the timer thread (call from the job's own thread)."""
        self._target = threading.get_ident()
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer; from now on nothing interrupts the job's thread."""
        with self._lock:
            self._armed = False
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, self.interval))

    def report(self, progress: dict[str, Any]) -> None:
        """Record progress (written at most once a second); raise when the job must stop."""
        self.progress = dict(progress)
        now = time.monotonic()
        if now - self._last_write >= MIN_PROGRESS_INTERVAL:
            self._last_write = now
            self._beat(self.progress)
        self._raise_if_stopped()

    def check(self) -> None:
        """Raise JobCancelled or JobFenced if the job must stop (without writing anything)."""
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        if not (self.fenced or self.cancelled):
            return
        with self._lock:
            self._armed = False
        if self.fenced:
            raise JobFenced()
        raise JobCancelled()

    def _beat(self, progress: dict[str, Any] | None) -> None:
        try:
            cancel = self.store.heartbeat(self.partition, self.job_id, self.version, progress)
        except JobFenced:
            self.fenced = True
            return
        except Exception as exc:  # the database may be away for a moment: the next beat tries again
            log.warning(
                "heartbeat of job %s failed: %s",
                self.job_id,
                exc,
                extra={"partition": self.partition, "job_id": self.job_id},
            )
            return
        if cancel:
            self.cancelled = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat(self.progress or None)
            if self.fenced or self.cancelled:
                self._interrupt(JobFenced if self.fenced else JobCancelled)
                return

    def _interrupt(self, exc: type[JobInterrupted]) -> None:
        with self._lock:
            if not self._armed or not self.interrupt:
                return
            self._armed = False
            log.info(
                "job %s: %s; interrupting its worker thread",
                self.job_id,
                exc.default_message.lower(),
                extra={"partition": self.partition, "job_id": self.job_id},
            )
            raise_thread_exception(self._target, exc)  # type: ignore[no-untyped-call]
