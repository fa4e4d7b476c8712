"""An in-process job service for API tests: the generic service's interface, the real export planner and
processor behind it, run synchronously (real PostgreSQL and S3; no queue, no worker processes)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from core.errors import TooManyRequests
from core.settings import Settings
from orchestrator.export import finish_export, plan_export
from storage import Database
from workers.export import process_export


@dataclass
class FakeJob:
    """One export job as the fake service keeps it."""

    id: str
    kind: str
    partition: str
    definition: dict[str, Any]
    request_url: str
    status: str = "queued"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    http_status: int = 500
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    expires_at: datetime | None = None
    progress_text: str = "queued"


@dataclass
class _Ctx:
    partition: str
    job_id: str
    settings: Settings
    database: Database
    object_store: Any

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Accept progress."""


class FakeJobService:
    """Submit runs the export at once (or leaves it queued when ``hold`` is set)."""

    def __init__(self, settings: Settings, object_store: Any, *, max_concurrent: int = 4):
        self.settings = settings
        self.object_store = object_store
        self.max_concurrent = max_concurrent
        self.hold = False
        self.jobs: dict[str, FakeJob] = {}
        self._lock = threading.Lock()

    def submit(
        self,
        db: Database,
        partition: str,
        kind: str,
        definition: dict[str, Any],
        *,
        request_url: str,
        transaction_time: datetime,
    ) -> FakeJob:
        """Store the job; run it unless held."""
        with self._lock:
            active = [
                j
                for j in self.jobs.values()
                if j.partition == partition and j.status in ("queued", "running")
            ]
            if len(active) >= self.max_concurrent:
                raise TooManyRequests("Too many exports running in this partition", retry_after=30)
            job = FakeJob(secrets.token_hex(16), kind, partition, definition, request_url)
            self.jobs[job.id] = job
        if not self.hold:
            self.run(db, job.id)
        return job

    def run(self, db: Database, job_id: str) -> None:
        """Plan, process and finish one job in this thread."""
        job = self.jobs[job_id]
        ctx = _Ctx(job.partition, job.id, self.settings, db, self.object_store)
        group = SimpleNamespace(id=job.id, definition=job.definition)
        parts = []
        for definition in plan_export(ctx, group):
            result = process_export(ctx, SimpleNamespace(definition=definition, group_id=job.id))
            parts.append(SimpleNamespace(result=result))
        job.result = finish_export(ctx, group, parts)
        job.status = "completed"
        job.ended_at = datetime.now(UTC)
        job.expires_at = job.ended_at + timedelta(hours=1)

    def status(self, db: Database, partition: str, job_id: str) -> FakeJob | None:
        """Return the job if it belongs to ``partition``."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.partition == partition else None

    def cancel(self, db: Database, partition: str, job_id: str) -> None:
        """Cancel or release a job of ``partition``."""
        job = self.status(db, partition, job_id)
        if job is not None:
            job.status = "cancelled"

    def list_jobs(
        self, db: Database, partition: str, *, kind: str | None, status: str | None
    ) -> list[FakeJob]:
        """List the jobs of ``partition``."""
        return [
            j
            for j in self.jobs.values()
            if j.partition == partition
            and (kind is None or j.kind == kind)
            and (status is None or j.status == status)
        ]
