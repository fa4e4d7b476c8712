"""Two worker pools, as ``bulkhead serve`` starts them: ``--lane foreground`` and ``--lane background``.

Real orchestrator and worker processes on PostgreSQL, Redis and S3 run the test-only ``jobtest`` operation
(``tests/support/jobops.py``), each part of which reports the process that ran it and its thread's nice
value. The background threshold is lowered to 10 resources.
"""

from __future__ import annotations

from core.jobs import ANONYMOUS, JobStatus
from harness.cluster import JobCluster, wait_for, wait_for_status
from orchestrator import service
from storage import Database
from storage.jobs import JobQueue
from tests.support import jobops

ENDED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def test_a_large_job_runs_only_in_the_background_pool_and_a_small_one_only_in_the_foreground_pool(
    cluster: JobCluster, database: Database, partition: str, other_partition: str
) -> None:
    jobs = cluster.with_env(BULKHEAD_JOB_BACKGROUND_RESOURCES="10")
    try:
        jobs.orchestrator()
        foreground = jobs.worker("--lane", "foreground")
        background = jobs.worker("--lane", "background")
        settings = jobs.settings
        # Given a job planned at 20 resources in one partition and one of 4 in another
        large = service.submit(
            database, partition, jobops.KIND, {"parts": 4, "lines": 5}, caller=ANONYMOUS, settings=settings
        ).id
        small = service.submit(
            database,
            other_partition,
            jobops.KIND,
            {"parts": 2, "lines": 2},
            caller=ANONYMOUS,
            settings=settings,
        ).id
        # When both run to their end
        for p, job_id in ((partition, large), (other_partition, small)):
            wait_for_status(database, p, job_id, ENDED, timeout=90, cluster=jobs)
            assert service.status(database, p, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
        queue = JobQueue(database)
        large_runs = [p.result or {} for p in queue.parts(partition, large)]
        small_runs = [p.result or {} for p in queue.parts(other_partition, small)]
        # Then every part of the large job ran in the background pool, ten steps nicer (at most 19)
        assert background.popen is not None and foreground.popen is not None
        assert {r.get("ppid") for r in large_runs} == {background.popen.pid}
        # And every part of the small job ran in the foreground pool, at the usual priority
        assert {r.get("ppid") for r in small_runs} == {foreground.popen.pid}
        [usual] = {r["nice"] for r in small_runs}
        assert {r["nice"] for r in large_runs} == {min(19, usual + 10)}
    finally:
        jobs.stop()


def test_a_pool_stopped_while_background_work_runs_puts_it_back_and_the_next_pool_finishes_it_once(
    cluster: JobCluster, database: Database, partition: str
) -> None:
    jobs = cluster.with_env(BULKHEAD_JOB_BACKGROUND_RESOURCES="1")
    try:
        jobs.orchestrator()
        first = jobs.worker("--lane", "background")
        # Given a job in the background lane whose two parts are running (five seconds of work each)
        definition = {"parts": 2, "lines": 3, "steps": 100, "step_seconds": 0.05}
        job_id = service.submit(
            database, partition, jobops.KIND, definition, caller=ANONYMOUS, settings=jobs.settings
        ).id
        queue = JobQueue(database)

        def both_running() -> bool:
            parts = queue.parts(partition, job_id)
            return len(parts) == 2 and all(p.status == JobStatus.RUNNING for p in parts)

        wait_for(both_running, timeout=60, what="both parts to run")
        # When that pool is stopped (SIGTERM), and another one started
        first.stop()
        assert "put back in the queue" in first.log_tail(200)
        back = queue.parts(partition, job_id)
        assert all(p.status == JobStatus.QUEUED for p in back), back
        second = jobs.worker("--lane", "background")
        wait_for_status(database, partition, job_id, ENDED, timeout=90, cluster=jobs)
        # Then the job completes, every part run to its end by the second pool, its attempt not counted twice
        assert service.status(database, partition, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
        parts = queue.parts(partition, job_id)
        assert second.popen is not None
        assert {(p.result or {}).get("ppid") for p in parts} == {second.popen.pid}
        assert [p.attempts for p in parts] == [1, 1]
    finally:
        jobs.stop()
