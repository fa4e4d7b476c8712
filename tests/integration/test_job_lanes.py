"""Lanes: a large job's processing jobs go to the background lane, a small job's to the foreground.

Driven in the test process on PostgreSQL and S3 with the test-only ``jobtest`` operation, whose plan is
sized by its lines (``tests/support/jobops.py``); the background threshold is lowered to 10 resources.
"""

from __future__ import annotations

from datetime import timedelta

from core.jobs import ANONYMOUS, BACKGROUND_PRIORITY, JobStatus
from core.settings import Settings
from orchestrator import service
from orchestrator.sweeper import sweep
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.jobinproc import age, deliver, drain, make_resources, submit
from tests.support.jobops import this_thread_nice


def test_a_large_job_runs_in_the_background_lane_and_a_small_one_of_another_partition_in_the_foreground(
    settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
) -> None:
    resources, sender = make_resources(
        settings, database, object_store, job_background_resources=10, job_background_nice=7
    )
    # Given a job planned at 12 resources in one partition and one of 2 in another
    large = submit(resources, partition, parts=3, lines=4)
    small = submit(resources, other_partition, parts=1, lines=2)
    # When every message is delivered
    drain(resources, sender)
    # Then both completed
    assert service.status(database, partition, large, caller=ANONYMOUS).state == JobStatus.COMPLETED
    assert service.status(database, other_partition, small, caller=ANONYMOUS).state == JobStatus.COMPLETED
    # And the large job's work was sent to the background lane, the small job's to the foreground
    lanes = {(m.partition, m.job_id): m.background for m in sender.sent if m.actor == "process"}
    large_parts = resources.queue.parts(partition, large)
    small_parts = resources.queue.parts(other_partition, small)
    assert [lanes[(partition, p.id)] for p in large_parts] == [True, True, True]
    assert [lanes[(other_partition, p.id)] for p in small_parts] == [False]
    assert {p.priority for p in large_parts} == {BACKGROUND_PRIORITY}
    assert {p.priority for p in small_parts} == {0}
    # And each large part ran in a thread 7 steps nicer than the small part's
    base = this_thread_nice()
    assert {p.result["nice"] for p in large_parts if p.result} == {min(19, base + 7)}
    assert [p.result["nice"] for p in small_parts if p.result] == [base]


def test_a_background_job_whose_message_was_lost_is_sent_again_to_the_background_lane(
    settings: Settings, database: Database, object_store: S3ObjectStore, partition: str
) -> None:
    resources, sender = make_resources(settings, database, object_store, job_background_resources=10)
    large = submit(resources, partition, parts=2, lines=10)
    # Given a large job whose released messages never reached a worker
    for message in sender.take():
        if message.actor == "orchestrate":
            deliver(resources, message)
    lost = [m for m in sender.take() if m.actor == "process"]
    assert lost and all(m.background for m in lost)
    for part in resources.queue.parts(partition, large):
        age(database, part.id, resources.settings.job_stale_seconds + 5, column="released_at")
    # When the sweeper runs
    sweep(resources)
    # Then it sends them again, to the background lane, and the job completes
    resent = [m for m in sender.sent if m.actor == "process"][len(lost) :]
    assert sorted(m.job_id for m in resent) == sorted(m.job_id for m in lost)
    assert all(m.background for m in resent)
    drain(resources, sender)
    view = service.status(database, partition, large, caller=ANONYMOUS)
    assert view.state == JobStatus.COMPLETED
    assert view.ended_at is not None and view.expires_at is not None
    assert view.expires_at - view.ended_at == timedelta(hours=resources.settings.job_expiry_hours)
