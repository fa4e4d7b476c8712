"""The job machinery with real processes: ``bulkhead orchestrator`` and ``bulkhead worker`` subprocesses on
real PostgreSQL, Redis and S3, running the test-only ``jobtest`` operation (``tests/support/jobops.py``).

The processes use a database of this module's own and a queue namespace of their own, so nothing else in
the test run (or another run on the same Redis) interferes with them. Their broker is the test run's Redis,
or the RabbitMQ that ``BULKHEAD_TEST_BROKER_URL`` names (``amqp://...``) when it is set; the Redis restart
test always uses a Redis server of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.embedded import EmbeddedRedis, free_port
from core.errors import NotFound
from core.jobs import ANONYMOUS, JobInfo, JobStatus
from harness.cluster import (
    JobCluster,
    job_environ,
    migrated_database,
    unique_namespace,
    wait_for,
    wait_for_status,
)
from harness.services import S3Settings, app_database
from orchestrator import service
from storage import Database
from storage.jobs import JobQueue
from storage.objectstore import S3ObjectStore
from tests.support import jobops
from workers.broker import broker_description, close_outboxes, outbox_for

KIND = jobops.KIND
ENDED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


@pytest.fixture(scope="module")
def cluster_database_url(owner_database_url: str) -> Iterator[str]:
    """Yield the application URL of a migrated database of this module's own."""
    with migrated_database(owner_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def cluster_db(cluster_database_url: str) -> Iterator[Database]:
    """Yield a handle on the module's database."""
    db = app_database(cluster_database_url)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def logs_dir() -> Iterator[Path]:
    """Yield a directory for the processes' logs."""
    path = Path(tempfile.mkdtemp(prefix="bulkhead-jobs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(
    cluster_database_url: str, redis_url: str, s3_settings: S3Settings, logs_dir: Path
) -> Iterator[JobCluster]:
    """Yield an orchestrator and a worker (one process, two threads) on a queue namespace of their own."""
    broker = (
        {"BULKHEAD_BROKER_URL": os.environ["BULKHEAD_TEST_BROKER_URL"]}
        if os.environ.get("BULKHEAD_TEST_BROKER_URL")
        else {}
    )
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": cluster_database_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            **broker,
            **s3_settings.environ(),
        }
    )
    jobs = JobCluster(env, logs_dir)
    jobs.orchestrator()
    jobs.worker()
    yield jobs
    jobs.stop()
    close_outboxes()


def submit(cluster: JobCluster, db: Database, partition: str, **definition: object) -> str:
    """Submit a jobtest job as the API would; return its id."""
    return service.submit(
        db, partition, KIND, dict(definition), caller=ANONYMOUS, settings=cluster.settings
    ).id


def objects(store: S3ObjectStore, partition: str, job_id: str) -> dict[str, bytes]:
    """Return every object a job wrote, by key."""
    return {k: b"".join(store.get_stream(k)) for k in store.list_keys(store.job_prefix(partition, job_id))}


def store_of(s3_settings: S3Settings, cluster: JobCluster) -> S3ObjectStore:
    """Return the object store the cluster writes to."""
    from storage.objectstore import object_store_from_settings

    return object_store_from_settings(cluster.settings)


def assert_written_once(parts: list[JobInfo], written: dict[str, bytes], lines: int) -> None:
    """Check that every part wrote exactly its object, with exactly its lines, once."""
    assert len(written) == len(parts)
    for part in parts:
        n = part.definition["n"]
        [body] = [b for k, b in written.items() if k.endswith(f"/Part-{n}.ndjson")]
        assert body.splitlines() == [f'{{"part":{n},"line":{i}}}'.encode() for i in range(lines)]


def test_a_job_runs_to_completion_on_real_worker_processes_and_logs_name_its_partition_and_id(
    cluster: JobCluster, cluster_db: Database, s3_settings: S3Settings, partition: str
) -> None:
    # Given an orchestrator and a worker process
    # When a job of five parts is submitted
    job_id = submit(cluster, cluster_db, partition, parts=5, lines=4, steps=2, step_seconds=0.1)
    # Then it completes, every part written once, and the status says so
    wait_for_status(cluster_db, partition, job_id, ENDED, timeout=60, cluster=cluster)
    view = service.status(cluster_db, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.COMPLETED, cluster.logs()
    assert view.result is not None and view.result["count"] == 20
    assert (view.parts, view.parts_done) == (5, 5)
    parts = JobQueue(cluster_db).parts(partition, job_id)
    assert_written_once(parts, objects(store_of(s3_settings, cluster), partition, job_id), 4)
    # And the processes' log lines name the broker, and the partition and job they are about
    logs = cluster.logs()
    assert f"of {broker_description(cluster.settings)}" in logs
    assert f"[partition={partition} job={job_id}] planned jobtest job {job_id}: 5 processing jobs" in logs
    assert f"[partition={partition} job={parts[0].id}] job {parts[0].id} completed" in logs


def test_a_duplicated_message_changes_nothing(
    cluster: JobCluster, cluster_db: Database, s3_settings: S3Settings, partition: str
) -> None:
    # Given a completed job
    job_id = submit(cluster, cluster_db, partition, parts=3)
    wait_for_status(cluster_db, partition, job_id, ENDED, timeout=60, cluster=cluster)
    queue = JobQueue(cluster_db)
    parts_before = queue.parts(partition, job_id)
    group_before = queue.get(partition, job_id)
    store = store_of(s3_settings, cluster)
    etags_before = {k: store.head(k) for k in objects(store, partition, job_id)}
    # When every one of its messages is delivered again
    outbox = outbox_for(cluster.settings)
    for part in parts_before:
        outbox.send_process(KIND, partition, part.id)
    outbox.send_orchestrate(partition, job_id)
    marker = f"job {parts_before[-1].id} is not queued"
    wait_for(lambda: marker in cluster.logs(), timeout=20, what="the duplicate to be seen")
    time.sleep(1.0)
    # Then no row and no object changed
    assert queue.parts(partition, job_id) == parts_before
    assert queue.get(partition, job_id) == group_before
    assert {k: store.head(k) for k in objects(store, partition, job_id)} == etags_before


def test_a_worker_killed_with_sigkill_mid_job_is_taken_over_and_every_part_is_written_exactly_once(
    cluster: JobCluster, cluster_db: Database, s3_settings: S3Settings, partition: str
) -> None:
    # Given a job of six parts of about 2 s each, running on the worker
    job_id = submit(cluster, cluster_db, partition, parts=6, lines=5, steps=10, step_seconds=0.2)
    queue = JobQueue(cluster_db)

    def busy() -> list[JobInfo]:
        return [p for p in queue.parts(partition, job_id) if p.status == JobStatus.RUNNING and p.progress]

    running = wait_for(busy, timeout=60, what="a part to be running")
    # When every worker process is killed with SIGKILL in the middle of it
    for process in cluster.processes:
        if process.name == "worker" and process.running():
            process.kill()
    victims = {p.id for p in queue.parts(partition, job_id) if p.status == JobStatus.RUNNING}
    assert {p.id for p in running} <= victims
    # And a new worker starts
    cluster.worker()
    # Then the sweeper hands the killed parts to it and the job completes, every part written exactly once
    wait_for_status(cluster_db, partition, job_id, ENDED, timeout=90, cluster=cluster)
    view = service.status(cluster_db, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.COMPLETED, cluster.logs()
    assert view.result is not None and view.result["count"] == 30
    parts = queue.parts(partition, job_id)
    assert_written_once(parts, objects(store_of(s3_settings, cluster), partition, job_id), 5)
    assert {p.id for p in parts if p.attempts == 2} == victims
    assert all(p.attempts == 1 for p in parts if p.id not in victims)
    assert "taken over" in cluster.logs()


def test_parts_of_a_small_job_are_released_before_a_huge_job_of_another_partition_drains(
    cluster: JobCluster, cluster_db: Database, partition: str, other_partition: str
) -> None:
    # Given a huge job running in one partition (windows of two per job and per partition)
    huge = submit(cluster, cluster_db, partition, parts=16, lines=1, steps=3, step_seconds=0.1)
    queue = JobQueue(cluster_db)
    wait_for(
        lambda: any(p.status != JobStatus.QUEUED for p in queue.parts(partition, huge)),
        timeout=60,
        what="the huge job to start",
    )
    # When a small job is submitted in another partition
    small = submit(cluster, cluster_db, other_partition, parts=2, lines=1, steps=3, step_seconds=0.1)
    wait_for_status(cluster_db, other_partition, small, ENDED, timeout=60, cluster=cluster)
    # Then the small job finished while most of the huge one was still waiting
    huge_parts = queue.parts(partition, huge)
    assert service.status(cluster_db, other_partition, small, caller=ANONYMOUS).state == JobStatus.COMPLETED
    assert sum(1 for p in huge_parts if p.status == JobStatus.COMPLETED) <= 8
    # And the huge job never had more than its window in flight, and still completes
    wait_for_status(cluster_db, partition, huge, ENDED, timeout=90, cluster=cluster)
    assert service.status(cluster_db, partition, huge, caller=ANONYMOUS).state == JobStatus.COMPLETED
    small_started = max(p.started_at for p in queue.parts(other_partition, small) if p.started_at)
    later = [p for p in queue.parts(partition, huge) if p.started_at and p.started_at > small_started]
    assert len(later) >= 8


def test_a_job_whose_parts_keep_failing_fails_at_the_attempt_cap_with_an_operation_outcome(
    cluster: JobCluster, cluster_db: Database, partition: str
) -> None:
    # Given a job whose part fails at every attempt (the cap is 3)
    job_id = submit(cluster, cluster_db, partition, parts=1, fail_attempts=99)
    # When the workers have tried
    wait_for_status(cluster_db, partition, job_id, ENDED, timeout=60, cluster=cluster)
    # Then the job failed, and its OperationOutcome says why
    view = service.status(cluster_db, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.FAILED and view.http_status == 500
    assert view.error is not None
    text = " ".join(issue["diagnostics"] for issue in view.error["issue"])
    assert "Gave up after 3 attempts; the last one failed: RuntimeError: part 0 failed on attempt 3" in text
    [part] = JobQueue(cluster_db).parts(partition, job_id)
    assert part.attempts == 3


def test_cancel_while_planning_while_running_and_after_completion(
    cluster: JobCluster, cluster_db: Database, s3_settings: S3Settings, partition: str
) -> None:
    queue = JobQueue(cluster_db)
    store = store_of(s3_settings, cluster)
    settings = cluster.settings
    # Given a job whose planning takes long
    planning = submit(cluster, cluster_db, partition, parts=3, plan_seconds=30)
    wait_for_status(cluster_db, partition, planning, {JobStatus.PLANNING}, timeout=30, cluster=cluster)
    # When it is cancelled, Then it ends cancelled without a plan, long before planning would have ended
    service.cancel(cluster_db, partition, planning, caller=ANONYMOUS, settings=settings)
    wait_for_status(cluster_db, partition, planning, {JobStatus.CANCELLED}, timeout=10, cluster=cluster)
    assert queue.parts(partition, planning) == []
    # Given a job whose parts run long
    running = submit(cluster, cluster_db, partition, parts=4, steps=100, step_seconds=0.1)
    wait_for(
        lambda: any(p.status == JobStatus.RUNNING for p in queue.parts(partition, running)),
        timeout=60,
        what="a part to run",
    )
    # When it is cancelled, Then running parts stop at their next heartbeat and nothing of it is left
    started = time.monotonic()
    service.cancel(cluster_db, partition, running, caller=ANONYMOUS, settings=settings)
    wait_for_status(cluster_db, partition, running, {JobStatus.CANCELLED}, timeout=10, cluster=cluster)
    assert time.monotonic() - started < 8
    assert {p.status for p in queue.parts(partition, running)} == {JobStatus.CANCELLED}
    assert objects(store, partition, running) == {}
    # Given a completed job
    done = submit(cluster, cluster_db, partition, parts=2)
    wait_for_status(cluster_db, partition, done, ENDED, timeout=60, cluster=cluster)
    assert len(objects(store, partition, done)) == 2
    # When it is deleted, Then it is not found any more and its objects go
    service.cancel(cluster_db, partition, done, caller=ANONYMOUS, settings=settings)
    # (keys only: an object listed may be gone before it is read, as the deletion runs meanwhile)
    wait_for(
        lambda: not list(store.list_keys(store.job_prefix(partition, done))),
        timeout=20,
        what="the objects to go",
    )
    for job_id in (planning, running, done):
        with pytest.raises(NotFound):
            service.status(cluster_db, partition, job_id, caller=ANONYMOUS)


def test_a_redis_restart_that_loses_every_message_mid_job_loses_no_work(
    cluster_database_url: str, cluster_db: Database, s3_settings: S3Settings, logs_dir: Path, partition: str
) -> None:
    # Given an orchestrator and a worker on a Redis server of their own, in the middle of a job
    data = logs_dir / f"redis-{partition}"
    redis = EmbeddedRedis(data, port=free_port())
    redis_url = redis.start()
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": cluster_database_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            **s3_settings.environ(),
        }
    )
    jobs = JobCluster(env, logs_dir)
    try:
        jobs.orchestrator()
        jobs.worker()
        job_id = submit(jobs, cluster_db, partition, parts=6, lines=2, steps=5, step_seconds=0.2)
        queue = JobQueue(cluster_db)
        wait_for(
            lambda: sum(p.status == JobStatus.COMPLETED for p in queue.parts(partition, job_id)) >= 1,
            timeout=60,
            what="a part to complete",
        )
        # When Redis stops, loses its data (every queued message) and starts again on the same port
        redis.stop()
        for file in data.iterdir():
            if file.name != "redis.conf":
                shutil.rmtree(file) if file.is_dir() else file.unlink()
        time.sleep(1.0)
        redis.start()
        # Then the job still completes, every part written exactly once
        wait_for_status(cluster_db, partition, job_id, ENDED, timeout=120, cluster=jobs)
        view = service.status(cluster_db, partition, job_id, caller=ANONYMOUS)
        assert view.state == JobStatus.COMPLETED, jobs.logs()
        parts = queue.parts(partition, job_id)
        assert_written_once(parts, objects(store_of(s3_settings, jobs), partition, job_id), 2)
    finally:
        jobs.stop()
        redis.stop()
        close_outboxes()
