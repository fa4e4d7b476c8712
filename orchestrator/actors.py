"""The ``orchestrate`` actor, on the broker ``workers.actors`` builds from the environment.

Imported only by the orchestrator process (``bulkhead orchestrator``); senders use the Outbox.
"""

from __future__ import annotations

import dramatiq

from orchestrator.lifecycle import advance_group
from workers.actors import broker, settings
from workers.broker import ORCHESTRATE_ACTOR, ORCHESTRATOR_QUEUE, broker_queue
from workers.resources import worker_resources


@dramatiq.actor(
    actor_name=ORCHESTRATE_ACTOR,
    queue_name=broker_queue(settings, ORCHESTRATOR_QUEUE),
    broker=broker,
    max_retries=settings.job_message_retries,
    notify_shutdown=True,
)
def orchestrate(partition: str, job_id: str) -> None:
    """Advance group job ``job_id`` of ``partition`` one step (plan, release, finish, fail, settle)."""
    advance_group(worker_resources(), partition, job_id)
