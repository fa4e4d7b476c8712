"""The message broker: Dramatiq on Redis (or RabbitMQ), its middleware, and sending job messages.

Nothing here runs at import time. The processes that *consume* messages build their broker in
``workers/actors.py`` (the one module that does so at import, because Dramatiq needs a broker before actors
are declared); every process that only *sends* (the API, the orchestrator's release, a worker telling the
orchestrator a job ended) uses an ``Outbox`` built from its settings.

Messages carry two keyword arguments and nothing else: ``partition`` and ``job_id``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries, ShutdownNotifications, TimeLimit

from core.errors import ServiceUnavailable
from core.settings import Settings
from workers.registry import queue_for
from workers.wake import REDIS_POLL_MS, WakingRedisBroker

log = logging.getLogger(__name__)

#: The orchestrator's queue and actor: ``orchestrate(partition, job_id)`` advances one group job.
ORCHESTRATOR_QUEUE = "orchestrator"
ORCHESTRATE_ACTOR = "orchestrate"


def uses_rabbitmq(settings: Settings) -> bool:
    """Return True when the settings name a RabbitMQ broker (an ``amqp://`` or ``amqps://`` URL)."""
    return bool(settings.broker_url and settings.broker_url.startswith(("amqp://", "amqps://")))


def broker_queue(settings: Settings, queue: str) -> str:
    """Return the broker's name for Bulkhead's queue ``queue``.

    On Redis the namespace already separates deployments (every key carries it), so queues keep their
    names; RabbitMQ has no key namespace, so there the queue name carries it: ``{namespace}.{queue}``.
    """
    return f"{settings.queue_namespace}.{queue}" if uses_rabbitmq(settings) else queue


#: The background lane of a queue is the queue ``{queue}-background`` (docs/architecture.md "Lanes").
BACKGROUND_LANE_SUFFIX = "-background"


def lane_queue(queue: str, *, background: bool) -> str:
    """Return the queue of ``queue``'s background lane, or ``queue`` itself for the foreground."""
    return queue + BACKGROUND_LANE_SUFFIX if background else queue


def processing_actor_name(queue: str) -> str:
    """Return the name of the generic processing actor that consumes ``queue``."""
    return "process_" + queue.replace("-", "_")


def broker_description(settings: Settings) -> str:
    """Return where messages go, without credentials (for logs and start-up lines)."""
    url = settings.broker_url or settings.redis_url or ""
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2]
    if scheme.startswith("amqp"):
        return f"{scheme}://{host} (queues {settings.queue_namespace}.*)"
    return f"{scheme}://{host} (namespace {settings.queue_namespace})"


def job_middleware(settings: Settings) -> list[Middleware]:
    """Return the middleware of a consuming broker: retry policy and time limit from settings.

    Dramatiq's own retries only cover failures *around* a job (the database unreachable before the claim,
    say); a job's own failures are retried by the job machinery, counted in the job table's attempts.
    """
    from workers.metrics import prometheus_middleware
    from workers.middleware import JobLogContext

    backoff_ms = max(1, int(settings.job_retry_backoff_seconds * 1000))
    return [
        TimeLimit(time_limit=max(1000, int(settings.job_time_limit_seconds * 1000))),
        ShutdownNotifications(notify_shutdown=True),
        Retries(
            max_retries=settings.job_message_retries,
            min_backoff=backoff_ms,
            max_backoff=max(backoff_ms, int(settings.job_retry_backoff_max_seconds * 1000)),
        ),
        JobLogContext(),
        *prometheus_middleware(),
    ]


class _PromptRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers poll their queue every ``REDIS_POLL_MS``
    (``BULKHEAD_REDIS_WAKE=0``: for a Redis where publish/subscribe is not allowed)."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return super().consume(queue_name, prefetch, min(timeout, REDIS_POLL_MS))


def make_broker(settings: Settings, *, middleware: list[Middleware] | None = None) -> dramatiq.Broker:
    """Build the broker ``settings`` name: RabbitMQ for an ``amqp://`` broker URL, Redis otherwise.

    Deployments (or test runs) sharing one Redis or one RabbitMQ never take each other's messages: on Redis
    every key lives under ``queue_namespace``; on RabbitMQ every queue name starts with it (``broker_queue``).
    """
    chosen = list(middleware) if middleware is not None else []
    url = settings.broker_url
    if url and uses_rabbitmq(settings):
        return RabbitmqBroker(url=url, middleware=chosen)
    url = url or settings.redis_url
    if not url:
        raise ServiceUnavailable(
            "No message broker is configured: set BULKHEAD_REDIS_URL (or BULKHEAD_BROKER_URL)"
        )
    kind = WakingRedisBroker if settings.redis_wake else _PromptRedisBroker
    return kind(url=url, namespace=settings.queue_namespace, middleware=chosen)


class MessageSender(Protocol):
    """Sends job messages (the Outbox; tests may record instead)."""

    def send_orchestrate(self, partition: str, group_id: str, *, delay_seconds: float | None = None) -> None:
        """Ask the orchestrator to advance group job ``group_id`` of ``partition``."""
        ...

    def send_process(
        self,
        kind: str,
        partition: str,
        job_id: str,
        *,
        background: bool = False,
        delay_seconds: float | None = None,
    ) -> None:
        """Ask a worker to run processing job ``job_id`` of ``partition`` (in the background lane?)."""
        ...


class Outbox:
    """Send job messages through a broker; a broker failure becomes ServiceUnavailable."""

    def __init__(self, broker: dramatiq.Broker, settings: Settings):
        self.broker = broker
        self.settings = settings

    def send(
        self, queue: str, actor_name: str, partition: str, job_id: str, *, delay_seconds: float | None = None
    ) -> None:
        """Enqueue one message ``actor_name(partition=..., job_id=...)`` on Bulkhead's queue ``queue``."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=broker_queue(self.settings, queue),
            actor_name=actor_name,
            args=(),
            kwargs={"partition": partition, "job_id": job_id},
            options={},
        )
        delay = int(delay_seconds * 1000) if delay_seconds and delay_seconds > 0 else None
        try:
            self.broker.enqueue(message, delay=delay)
        except (dramatiq.errors.DramatiqError, redis.exceptions.RedisError, OSError) as exc:
            raise ServiceUnavailable(f"The message broker is unreachable: {exc}") from exc

    def send_orchestrate(self, partition: str, group_id: str, *, delay_seconds: float | None = None) -> None:
        """Ask the orchestrator to advance group job ``group_id`` of ``partition``."""
        self.send(ORCHESTRATOR_QUEUE, ORCHESTRATE_ACTOR, partition, group_id, delay_seconds=delay_seconds)

    def send_process(
        self,
        kind: str,
        partition: str,
        job_id: str,
        *,
        background: bool = False,
        delay_seconds: float | None = None,
    ) -> None:
        """Ask a worker to run processing job ``job_id`` (of ``kind``) of ``partition``.

        A background job (of a large job, see ``workers.background``) goes to its queue's background lane.
        """
        queue = lane_queue(queue_for(kind), background=background)
        self.send(queue, processing_actor_name(queue), partition, job_id, delay_seconds=delay_seconds)


_OUTBOXES: dict[tuple[str | None, str | None, str], Outbox] = {}
_OUTBOX_LOCK = threading.Lock()


def outbox_for(settings: Settings) -> Outbox:
    """Return this process's Outbox for the broker ``settings`` name (built once, then shared)."""
    key = (settings.broker_url, settings.redis_url, settings.queue_namespace)
    with _OUTBOX_LOCK:
        outbox = _OUTBOXES.get(key)
        if outbox is None:
            outbox = Outbox(make_broker(settings), settings)
            _OUTBOXES[key] = outbox
        return outbox


def close_outboxes() -> None:
    """Close every Outbox's broker connections (at process exit, or between tests)."""
    with _OUTBOX_LOCK:
        for outbox in _OUTBOXES.values():
            try:
                outbox.broker.close()
            except Exception:  # pragma: no cover - closing is best effort
                log.debug("closing a broker failed", exc_info=True)
        _OUTBOXES.clear()
