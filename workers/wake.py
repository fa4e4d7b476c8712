"""Idle Redis consumers that sleep until a message comes, instead of polling.

Dramatiq's Redis consumer polls an empty queue (every ``REDIS_POLL_MS`` here), each poll a script run in
Redis: with ten queues and their delay queues, an idle worker process made about a hundred polls a second.
Here a sender publishes the queue's name on ``<namespace>:wake`` after each enqueue (``WakingRedisBroker``),
one listener thread per process holds a subscription to it (a blocking read: no CPU while idle), and an idle
consumer waits for its queue's name, or for ``IDLE_WAIT_SECONDS`` at most: the bound covers a message
enqueued by a sender that does not publish, and a subscription lost while Redis restarts. It waits in slices
of ``WAIT_SLICE_SECONDS`` (without asking Redis between them), so that a worker told to stop is not kept.

A consumer that still holds messages (being processed, or delayed ones waiting for their time) keeps
polling every ``REDIS_POLL_MS``: Dramatiq acknowledges finished messages and releases delayed ones between
two of its polls, which must not wait for a wake-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

log = logging.getLogger(__name__)

#: Milliseconds a busy consumer (one holding messages) waits between polls of its queue.
REDIS_POLL_MS = 200
#: Seconds an idle consumer waits for a wake-up before it looks at its queue anyway.
IDLE_WAIT_SECONDS = 5.0
#: Seconds of one wait: between two, Dramatiq's consumer loop sees a shutdown (no Redis call is made).
WAIT_SLICE_SECONDS = 0.5


class Waker:
    """One process's subscription to the wake channel, and the consumers waiting on it."""

    def __init__(self, client: redis.Redis, channel: str):
        self.client = client
        self.channel = channel
        self._cond = threading.Condition()
        self._woken: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def seen(self, queue: str) -> int:
        """Return how many wake-ups ``queue`` has had (read before a fetch, waited on after it)."""
        self._start()
        with self._cond:
            return self._woken.get(queue, 0)

    def wait(self, queue: str, seen: int, timeout: float) -> bool:
        """Wait until ``queue`` is woken after ``seen`` (True), or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._woken.get(queue, 0) != seen, timeout)

    def wake(self, queue: str | None = None) -> None:
        """Wake the consumers of ``queue`` (every consumer when None)."""
        with self._cond:
            for name in [queue] if queue is not None else list(self._woken):
                self._woken[name] = self._woken.get(name, 0) + 1
            self._cond.notify_all()

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._cond:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._listen, name="bulkhead-wake", daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                # Messages sent while the subscription was down: let every consumer look once.
                self.wake()
                for item in pubsub.listen():  # type: ignore[no-untyped-call]
                    data = item.get("data")
                    if isinstance(data, bytes):
                        self.wake(data.decode("utf-8", "replace"))
            except redis.RedisError as exc:
                log.debug(
                    "wake subscription lost (%s); consumers poll every %ss meanwhile", exc, IDLE_WAIT_SECONDS
                )
                time.sleep(1.0)


class WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting for a wake-up rather than polling while it holds nothing."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int):
        super().__init__(broker, queue_name, prefetch, min(timeout, REDIS_POLL_MS))  # type: ignore[no-untyped-call]
        self.waker: Waker = broker.waker
        self._looked_at = 0.0  # when the queue was last fetched from
        self._looked_seen = -1  # the wake-ups counted then

    def requeue(self, messages: Any) -> None:
        """Put messages back (a stopping worker's) and wake the consumers that can take them now."""
        held = list(messages)
        super().requeue(held)  # type: ignore[no-untyped-call]
        if held:
            self.broker.publish_wake(self.queue_name)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                seen = self.waker.seen(self.queue_name)
                idle = not self.outstanding_message_count
                waited = time.monotonic() - self._looked_at
                if idle and seen == self._looked_seen and waited < IDLE_WAIT_SECONDS:
                    # Nothing new since the last look: wait a slice (Dramatiq's loop then checks for a
                    # shutdown and comes back) without asking Redis.
                    self.waker.wait(
                        self.queue_name, seen, min(WAIT_SLICE_SECONDS, IDLE_WAIT_SECONDS - waited)
                    )
                    return None
                self._looked_at, self._looked_seen = time.monotonic(), seen
                messages = []
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = messages = self.broker.do_fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                if messages:
                    continue
                if not idle:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                else:
                    self.misses = 0
                    self.waker.wait(self.queue_name, seen, WAIT_SLICE_SECONDS)
                return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]


class WakingRedisBroker(RedisBroker):
    """A Redis broker whose senders publish a wake-up and whose consumers wait for one when idle."""

    consumer_class = WakingConsumer

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.waker = Waker(self.client, f"{self.namespace}:wake")

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        sent: Message[Any] = super().enqueue(message, delay=delay)
        self.publish_wake(dq_name(message.queue_name) if delay is not None else message.queue_name)
        return sent

    def publish_wake(self, queue: str) -> None:
        """Tell every process's consumers of ``queue`` that it holds a message."""
        try:
            self.client.publish(self.waker.channel, queue)
        except redis.RedisError:
            log.debug(
                "could not publish the wake-up of %s; its consumers find it within %ss",
                queue,
                IDLE_WAIT_SECONDS,
            )


__all__ = [
    "IDLE_WAIT_SECONDS",
    "REDIS_POLL_MS",
    "WAIT_SLICE_SECONDS",
    "Waker",
    "WakingConsumer",
    "WakingRedisBroker",
]
