"""The session handling every part of the job store shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.jobs import JobStatus
from storage.database import Database

QUEUED = JobStatus.QUEUED.value
PLANNING = JobStatus.PLANNING.value
RUNNING = JobStatus.RUNNING.value
COMPLETED = JobStatus.COMPLETED.value
FAILED = JobStatus.FAILED.value
CANCELLED = JobStatus.CANCELLED.value
ACTIVE = (QUEUED, PLANNING, RUNNING)
TERMINAL = (COMPLETED, FAILED, CANCELLED)


class JobStoreBase:
    """Hold the database; open one short transaction per operation."""

    def __init__(self, database: Database):
        self.database = database

    @contextmanager
    def _session(self, partition: str | None) -> Iterator[Session]:
        """Yield a session in one transaction, scoped to ``partition``; commits when the block ends without an
        error. None: the machinery's own cross-partition work (release window, sweeper scans), which runs on
        the administrative connection (``Database.admin_session``), the only one that sees every partition."""
        if partition is None:
            with self.database.admin_session() as session:
                yield session
            return
        with Session(self.database.engine, expire_on_commit=False) as session, session.begin():
            session.execute(text("SELECT set_config('bulkhead.partition', :p, true)"), {"p": partition})
            yield session
