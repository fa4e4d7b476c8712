"""Running the job machinery inside the test process: a recording sender and a delivery loop.

The integration tests drive ``advance_group`` and ``run_processing_job`` directly, delivering the messages the
machinery sends in the order it sent them (delays are ignored), on real PostgreSQL and S3.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import text

from core.jobs import ANONYMOUS
from core.settings import Settings
from orchestrator import service
from orchestrator.lifecycle import advance_group
from storage import Database
from storage.objectstore import ObjectStore, S3ObjectStore
from tests.support import jobops
from workers.resources import WorkerResources
from workers.runtime import run_processing_job

#: In-process timings: fast heartbeats, quick staleness, tiny back-off.
FAST = {
    "job_heartbeat_seconds": 0.2,
    "job_stale_seconds": 2.0,
    "job_max_attempts": 3,
    "job_retry_backoff_seconds": 0.05,
    "job_retry_backoff_max_seconds": 0.2,
    "job_window_per_job": 2,
    "job_window_per_partition": 3,
}


@dataclass(frozen=True)
class SentMessage:
    """One message the machinery sent."""

    actor: str
    partition: str
    job_id: str
    kind: str | None = None
    delay_seconds: float | None = None
    background: bool = False


class RecordingSender:
    """A MessageSender that keeps messages for the test to deliver."""

    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self._pending: list[SentMessage] = []
        self._lock = threading.Lock()

    def send_orchestrate(self, partition: str, group_id: str, *, delay_seconds: float | None = None) -> None:
        """Record an orchestrate message."""
        self._add(SentMessage("orchestrate", partition, group_id, None, delay_seconds))

    def send_process(
        self,
        kind: str,
        partition: str,
        job_id: str,
        *,
        background: bool = False,
        delay_seconds: float | None = None,
    ) -> None:
        """Record a processing message (and its lane)."""
        self._add(SentMessage("process", partition, job_id, kind, delay_seconds, background))

    def _add(self, message: SentMessage) -> None:
        with self._lock:
            self.sent.append(message)
            self._pending.append(message)

    def take(self) -> list[SentMessage]:
        """Return and forget the messages not delivered yet."""
        with self._lock:
            pending, self._pending = self._pending, []
            return pending

    def clear(self) -> None:
        """Forget every message."""
        with self._lock:
            self.sent.clear()
            self._pending.clear()


def deliver(resources: WorkerResources, message: SentMessage) -> str:
    """Deliver one message as its actor would; return what became of the job."""
    if message.actor == "orchestrate":
        return advance_group(resources, message.partition, message.job_id)
    return run_processing_job(resources, message.partition, message.job_id)


def drain(resources: WorkerResources, sender: RecordingSender, *, partition: str | None = None) -> list[str]:
    """Deliver messages until none is left (only ``partition``'s, when given); return the outcomes."""
    outcomes: list[str] = []
    for _ in range(10_000):
        pending = sender.take()
        if partition is not None:
            pending = [m for m in pending if m.partition == partition]
        if not pending:
            return outcomes
        for message in pending:
            outcomes.append(deliver(resources, message))
    raise AssertionError("the machinery kept sending messages")


def make_resources(
    settings: Settings, database: Database, store: ObjectStore, **overrides: Any
) -> tuple[WorkerResources, RecordingSender]:
    """Return resources with fast timings (and ``overrides``) and the sender that records their messages."""
    sender = RecordingSender()
    fast = replace(settings, **{**FAST, **overrides})
    return WorkerResources(fast, database, store=store, message_sender=sender), sender


def submit(resources: WorkerResources, partition: str, **definition: object) -> str:
    """Submit a jobtest job; return its id."""
    job = service.submit(
        resources.database,
        partition,
        jobops.KIND,
        dict(definition),
        caller=ANONYMOUS,
        settings=resources.settings,
        sender=resources.sender,
    )
    return job.id


def objects(store: S3ObjectStore, partition: str, group_id: str) -> dict[str, bytes]:
    """Return every object a job wrote, by key."""
    prefix = store.job_prefix(partition, group_id)
    return {key: b"".join(store.get_stream(key)) for key in store.list_keys(prefix)}


def age(database: Database, job_id: str, seconds: float, column: str = "heartbeat_at") -> None:
    """Move a job's timestamp ``seconds`` into the past (what a silent worker or a lost message leaves)."""
    assert column in {"heartbeat_at", "released_at", "expires_at"}
    with database.admin_session() as session:
        session.execute(
            text(f"UPDATE job SET {column} = now() - make_interval(secs => :s) WHERE id = :id"),
            {"s": seconds, "id": job_id},
        )
