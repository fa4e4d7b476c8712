"""Broker selection and queue names, without I/O (no connection is made)."""

from __future__ import annotations

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from core.settings import Settings
from workers.broker import REDIS_POLL_MS, broker_description, broker_queue, make_broker, processing_actor_name
from workers.main import dramatiq_argv
from workers.registry import BUILTIN_OPERATION_MODULES


def test_redis_is_the_broker_unless_an_amqp_url_names_rabbitmq() -> None:
    # Given settings with only a Redis URL, and settings with a RabbitMQ URL as well
    redis_only = Settings(redis_url="redis://127.0.0.1:6379/0", queue_namespace="tenant-a")
    rabbit = Settings(
        redis_url="redis://127.0.0.1:6379/0", broker_url="amqp://guest:guest@127.0.0.1:5672/%2F"
    )
    # When brokers are built from them
    redis_broker = make_broker(redis_only)
    rabbit_broker = make_broker(rabbit)
    # Then Redis keeps its keys under the namespace, and RabbitMQ is chosen for the amqp URL
    assert isinstance(redis_broker, RedisBroker) and redis_broker.namespace == "tenant-a"
    assert isinstance(rabbit_broker, RabbitmqBroker)
    assert "guest" not in broker_description(rabbit)


def test_queue_names_carry_the_namespace_on_rabbitmq_only() -> None:
    # Given the same namespace on both brokers
    redis_only = Settings(redis_url="redis://h/0", queue_namespace="run-1")
    rabbit = Settings(broker_url="amqp://h/", queue_namespace="run-1")
    # Then Redis queues keep their names (the keys carry the namespace) and RabbitMQ queues are prefixed
    assert broker_queue(redis_only, "export") == "export"
    assert broker_queue(rabbit, "export") == "run-1.export"
    assert processing_actor_name("bulk-edit") == "process_bulk_edit"


def test_the_worker_command_runs_dramatiq_on_bulkheads_broker_with_its_operation_modules() -> None:
    # Given settings naming an extra operation module
    settings = Settings(redis_url="redis://h/0", job_modules="tests.support.jobops", worker_threads=3)
    # When the Dramatiq command line of a worker is built
    argv = dramatiq_argv(settings, processes=2, queues=["export,jobtest"], modules=["extra.ops"])
    # Then the broker module comes first, then every operation module, then the options
    assert argv[0] == "workers.actors"
    modules = [*BUILTIN_OPERATION_MODULES, "tests.support.jobops", "extra.ops"]
    assert "workers.export" in BUILTIN_OPERATION_MODULES
    assert argv[1 : 1 + len(modules)] == modules
    assert argv[argv.index("--processes") + 1] == "2" and argv[argv.index("--threads") + 1] == "3"
    queues = ["export", "export-background", "jobtest", "jobtest-background"]
    assert argv[argv.index("--queues") + 1 :] == queues
    assert "--skip-logging" in argv


def test_an_idle_redis_consumer_waits_at_most_the_short_poll_whatever_timeout_the_worker_asks_for() -> None:
    # Given the Redis broker the settings name (nothing is connected until a message moves)
    broker = make_broker(Settings(redis_url="redis://127.0.0.1:9/0"))
    # When a worker opens a consumer with Dramatiq's default timeout, and one with a shorter one
    slow = broker.consume("export", prefetch=1, timeout=1000)
    quick = broker.consume("export", prefetch=1, timeout=50)
    # Then the idle wait is bounded by the broker's poll, and a shorter one is kept
    assert isinstance(broker, RedisBroker)
    assert (slow.timeout, quick.timeout) == (REDIS_POLL_MS, 50)
