"""What a worker process holds for every job it runs, built once per process (after any fork)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from core.settings import Settings
from storage import Database
from storage.jobs import JobQueue
from storage.objectstore import ObjectStore, object_store_from_settings
from workers.broker import MessageSender, outbox_for


@dataclass
class WorkerResources:
    """What a worker process holds for every job it runs: settings, database, object store, outbox.

    ``store`` and ``message_sender`` are built from the settings on first use unless given.
    """

    settings: Settings
    database: Database
    store: ObjectStore | None = field(default=None, repr=False)
    message_sender: MessageSender | None = field(default=None, repr=False)

    @cached_property
    def object_store(self) -> ObjectStore:
        """Return the object store."""
        return self.store if self.store is not None else object_store_from_settings(self.settings)

    @cached_property
    def sender(self) -> MessageSender:
        """Return the message sender."""
        return self.message_sender if self.message_sender is not None else outbox_for(self.settings)

    @property
    def queue(self) -> JobQueue:
        """Return the job queue on this database."""
        return JobQueue(self.database)


_RESOURCES: WorkerResources | None = None
_RESOURCES_LOCK = threading.Lock()


def worker_resources() -> WorkerResources:
    """Return this process's resources, built from the environment on first use (after any fork)."""
    global _RESOURCES  # noqa: PLW0603 - one set of connections per process, built lazily
    with _RESOURCES_LOCK:
        if _RESOURCES is None:
            settings = Settings.from_env()
            if not settings.database_url:
                raise RuntimeError("BULKHEAD_DATABASE_URL is not set")
            # Each worker thread holds one connection for its job and briefly one for its heartbeat timer.
            threads = max(settings.worker_threads, settings.orchestrator_threads)
            database = Database.from_settings(settings, pool_size=max(5, 2 * threads + 2))
            _RESOURCES = WorkerResources(settings=settings, database=database)
        return _RESOURCES


__all__ = ["WorkerResources", "worker_resources"]
