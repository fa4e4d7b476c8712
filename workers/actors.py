"""The consuming side of the broker: built at import time, then one processing actor per queue.

This is the one module of Bulkhead that does work at import time: Dramatiq needs its broker before actors
are declared. It reads the settings from the environment (``BULKHEAD_REDIS_URL`` or
``BULKHEAD_BROKER_URL``, ``BULKHEAD_QUEUE_NAMESPACE`` ...). Only processes that consume messages import it:
``bulkhead worker`` (through the Dramatiq CLI) and ``bulkhead orchestrator``; the API only sends, through an
``Outbox``.

Every processor registered (now or later, see ``workers.registry``) gets the generic processing actor of its
queue, ``process_<queue>(partition, job_id)``, which runs ``workers.runtime.run_processing_job``.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq import Broker
from dramatiq.middleware import Middleware

from core.logs import configure_logging
from core.settings import Settings
from workers.broker import (
    broker_description,
    broker_queue,
    job_middleware,
    lane_queue,
    make_broker,
    processing_actor_name,
)
from workers.process import die_with_parent
from workers.registry import Processor, on_register
from workers.resources import worker_resources
from workers.runtime import run_processing_job

log = logging.getLogger(__name__)


class WorkerProcessBoot(Middleware):
    """Set up each Dramatiq worker process: logs with partition and job id; die with the main process."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def after_process_boot(self, broker: Broker) -> None:
        """Configure logging and tie this process's life to its parent's."""
        configure_logging(self.settings)
        die_with_parent()
        log.info("worker process ready; messages from %s", broker_description(self.settings))


settings = Settings.from_env()
broker: Broker = make_broker(settings, middleware=[*job_middleware(settings), WorkerProcessBoot(settings)])
dramatiq.set_broker(broker)

_ACTORS: dict[str, dramatiq.Actor[[str, str], None]] = {}
_LOCK = threading.Lock()


def processing_actor(queue: str) -> dramatiq.Actor[[str, str], None]:
    """Return the processing actor of ``queue``, declaring it on first use."""
    with _LOCK:
        actor = _ACTORS.get(queue)
        if actor is None:

            def process(partition: str, job_id: str) -> None:
                run_processing_job(worker_resources(), partition, job_id)

            process.__name__ = processing_actor_name(queue)
            actor = dramatiq.actor(
                actor_name=processing_actor_name(queue),
                queue_name=broker_queue(settings, queue),
                broker=broker,
                notify_shutdown=True,
                max_retries=settings.job_message_retries,
            )(process)
            _ACTORS[queue] = actor
        return actor


def _declare(processor: Processor) -> None:
    processing_actor(processor.queue)
    processing_actor(lane_queue(processor.queue, background=True))


on_register(_declare)
