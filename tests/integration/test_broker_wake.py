"""Idle Redis consumers sleep until a message comes: prompt when one is sent, quiet while none is."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest

from workers.wake import IDLE_WAIT_SECONDS, WakingRedisBroker


@pytest.fixture
def broker(redis_url: str) -> Iterator[WakingRedisBroker]:
    made = WakingRedisBroker(url=redis_url, namespace=f"wake-{secrets.token_hex(4)}", middleware=[])
    made.declare_queue("work")
    yield made
    made.flush_all()
    made.close()


def test_an_idle_consumer_gets_a_message_within_50_ms_of_its_sending(broker: WakingRedisBroker) -> None:
    consumer = broker.consume("work")
    next(consumer)  # the first look starts the subscription (and finds nothing)
    delays = []
    for _ in range(5):
        got: list[float] = []

        def take(got: list[float] = got) -> None:
            while True:
                message = next(consumer)
                if message is not None:
                    got.append(time.monotonic())
                    consumer.ack(message)
                    return

        taker = threading.Thread(target=take)
        taker.start()
        time.sleep(0.3)  # the consumer is waiting, idle
        sent = time.monotonic()
        broker.enqueue(dramatiq.Message(queue_name="work", actor_name="a", args=(), kwargs={}, options={}))
        taker.join(timeout=IDLE_WAIT_SECONDS + 2)
        assert got, "the message never came"
        delays.append(got[0] - sent)
    assert max(delays) < 0.05, delays


def test_an_idle_consumer_looks_at_its_queue_only_every_few_seconds(
    broker: WakingRedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches: list[float] = []
    fetch = broker.do_fetch

    def counted(*args: object) -> object:
        fetches.append(time.monotonic())
        return fetch(*args)

    monkeypatch.setattr(broker, "do_fetch", counted)
    consumer = broker.consume("work")
    stop = threading.Event()

    def idle() -> None:
        while not stop.is_set():
            assert next(consumer) is None

    thread = threading.Thread(target=idle, daemon=True)
    thread.start()
    time.sleep(2.5)
    polls = len(fetches)
    stop.set()
    broker.waker.wake("work")
    thread.join(timeout=IDLE_WAIT_SECONDS + 2)
    # A polling consumer fetched every 200 ms (twelve times in 2.5 s); a waiting one looks once, plus the
    # look the subscription's start asks for.
    assert polls <= 2, polls


def test_a_message_sent_without_a_wake_up_is_still_found_within_the_idle_bound(
    broker: WakingRedisBroker,
) -> None:
    consumer = broker.consume("work")
    next(consumer)
    # A sender that does not publish: the plain Dramatiq enqueue
    broker.do_enqueue(
        "work",
        "m1",
        dramatiq.Message(
            queue_name="work", actor_name="a", args=(), kwargs={}, options={"redis_message_id": "m1"}
        ).encode(),
    )
    started = time.monotonic()
    message = None
    while message is None and time.monotonic() - started < IDLE_WAIT_SECONDS + 2:
        message = next(consumer)
    assert message is not None
    consumer.ack(message)


def test_a_message_put_back_by_a_stopping_consumer_wakes_the_others(broker: WakingRedisBroker) -> None:
    holder, waiter = broker.consume("work"), broker.consume("work")
    next(waiter)  # the subscription starts
    broker.enqueue(dramatiq.Message(queue_name="work", actor_name="a", args=(), kwargs={}, options={}))
    held = None
    while held is None:
        held = next(holder)
    got: list[float] = []

    def take() -> None:
        while not got:
            message = next(waiter)
            if message is not None:
                got.append(time.monotonic())
                waiter.ack(message)

    taker = threading.Thread(target=take)
    taker.start()
    time.sleep(0.3)
    put_back = time.monotonic()
    holder.requeue([held])
    taker.join(timeout=IDLE_WAIT_SECONDS + 2)
    assert got and got[0] - put_back < 0.1, got
