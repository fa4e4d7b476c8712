"""A bare Dramatiq actor for the job benchmark's baseline: count a message in Redis and do nothing else.

Loaded into ``bulkhead worker`` with ``--module tests.support.noop_actor`` (Redis broker only).
"""

from __future__ import annotations

import dramatiq

from workers.actors import broker

QUEUE = "bench-noop"
ACTOR = "bench_noop"


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, broker=broker, max_retries=0)
def bench_noop(partition: str, job_id: str) -> None:
    """Count one message under the key ``job_id`` names."""
    broker.client.incr(f"{broker.namespace}:bench:{job_id}")  # type: ignore[attr-defined]
