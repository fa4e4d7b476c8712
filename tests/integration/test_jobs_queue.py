"""The job table's guarantees on real PostgreSQL: claims, fencing, heartbeats, idempotent plans, partitions.

These tests call the job queue and the service functions directly; the processes that normally call them
are exercised in ``tests/e2e/test_worker_processes.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from core.errors import NotFound, TooManyRequests
from core.jobs import ANONYMOUS, MACHINERY, JobCaller, JobFenced, JobStatus
from core.settings import Settings
from orchestrator import service
from storage import Database
from storage.jobs import JobQueue
from tests.support.jobinproc import RecordingSender

KIND = "jobtest"


@pytest.fixture
def queue(database: Database) -> JobQueue:
    """Return the job queue of the test database."""
    return JobQueue(database)


def planned_group(queue: JobQueue, partition: str, parts: int = 3) -> tuple[str, list[Any]]:
    """Store a group job with ``parts`` processing jobs (planned and started); return its id and parts."""
    group = queue.create_group(partition, KIND, {"parts": parts}, max_attempts=3)
    assert group is not None
    planning = queue.start_planning(partition, group.id, "planner")
    assert planning is not None
    assert queue.store_plan(
        partition, group.id, planning.version, [{"n": n} for n in range(parts)], max_attempts=3
    )
    return group.id, queue.parts(partition, group.id)


def test_a_queued_job_is_claimed_once_and_a_second_claim_gets_nothing(
    queue: JobQueue, partition: str
) -> None:
    # Given a planned group with one processing job
    _, [part] = planned_group(queue, partition, parts=1)
    # When two workers claim it
    first = queue.claim(partition, part.id, "worker-a")
    second = queue.claim(partition, part.id, "worker-b")
    # Then only the first gets it, with a new version and its first attempt
    assert first is not None and second is None
    assert first.status == JobStatus.RUNNING
    assert first.version == part.version + 1
    assert first.attempts == 1
    assert first.worker == "worker-a"


def test_a_worker_whose_job_was_taken_over_can_neither_heartbeat_nor_complete_it(
    queue: JobQueue, partition: str
) -> None:
    # Given a job claimed by worker A, then taken over (requeued under a new version) and claimed by B
    _, [part] = planned_group(queue, partition, parts=1)
    a = queue.claim(partition, part.id, "worker-a")
    assert a is not None
    assert queue.requeue(partition, part.id, a.version, None) is not None
    b = queue.claim(partition, part.id, "worker-b")
    assert b is not None and b.version > a.version
    # When A heartbeats and tries to complete under its old version
    with pytest.raises(JobFenced):
        queue.heartbeat(partition, part.id, a.version, {"rows": 1})
    stale = queue.complete(partition, part.id, a.version, {"from": "a"})
    # Then nothing of A's is written, and B completes under its own version
    assert stale is None
    done = queue.complete(partition, part.id, b.version, {"from": "b"})
    assert done is not None and done.result == {"from": "b"}
    assert queue.fail(partition, part.id, a.version, {"resourceType": "OperationOutcome"}) is None
    final = queue.get(partition, part.id)
    assert final is not None and final.status == JobStatus.COMPLETED and final.result == {"from": "b"}


def test_a_heartbeat_records_progress_and_reports_a_cancel_request(queue: JobQueue, partition: str) -> None:
    # Given a running processing job
    group_id, [part, _] = planned_group(queue, partition, parts=2)
    job = queue.claim(partition, part.id, "worker")
    assert job is not None
    # When it heartbeats before and after the group is cancelled
    before = queue.heartbeat(partition, part.id, job.version, {"rows": 10})
    queue.request_cancel(partition, group_id, MACHINERY)
    after = queue.heartbeat(partition, part.id, job.version, {"rows": 20})
    # Then the first beat sees no cancel, the second does, and the progress is kept
    assert before is False and after is True
    current = queue.get(partition, part.id)
    assert current is not None and current.progress == {"rows": 20} and current.heartbeat_at is not None


def test_a_plan_is_stored_once_even_when_the_planner_runs_again(queue: JobQueue, partition: str) -> None:
    # Given a group whose plan was stored
    group_id, parts = planned_group(queue, partition, parts=4)
    group = queue.get(partition, group_id)
    assert group is not None
    # When the same plan is stored again (a duplicate orchestrate message, an orchestrator restarted)
    again = queue.store_plan(partition, group_id, group.version, [{"n": n} for n in range(4)], max_attempts=3)
    # Then nothing is added: the second store is refused and each definition exists once
    assert again is None
    stored = queue.parts(partition, group_id)
    assert sorted(p.definition["n"] for p in stored) == [0, 1, 2, 3]
    assert [p.id for p in stored] == [p.id for p in parts]


def test_a_replanned_group_keeps_each_definition_once(
    queue: JobQueue, partition: str, database: Database
) -> None:
    # Given a group that was planned, then sent back to planning (as a takeover of its planner would)
    group_id, _ = planned_group(queue, partition, parts=3)
    with database.admin_session() as session:
        session.execute(text("UPDATE job SET status = 'queued' WHERE id = :g"), {"g": group_id})
    planning = queue.start_planning(partition, group_id, "planner-2")
    assert planning is not None
    # When the planner stores an overlapping plan
    count = queue.store_plan(
        partition, group_id, planning.version, [{"n": n} for n in range(5)], max_attempts=3
    )
    # Then only the new definitions are added
    assert count == 5
    assert sorted(p.definition["n"] for p in queue.parts(partition, group_id)) == [0, 1, 2, 3, 4]


def test_a_job_of_one_partition_is_not_found_from_another(
    database: Database, settings: Settings, partition: str, other_partition: str
) -> None:
    # Given a job submitted in the victim's partition
    sender = RecordingSender()
    job = service.submit(
        database, partition, KIND, {"parts": 1}, caller=ANONYMOUS, settings=settings, sender=sender
    )
    queue = JobQueue(database)
    # When the attacker's partition asks for it by its id
    # Then status, cancel, the queue and the listing all behave as for an unknown id
    with pytest.raises(NotFound):
        service.status(database, other_partition, job.id, caller=ANONYMOUS)
    with pytest.raises(NotFound):
        service.cancel(database, other_partition, job.id, caller=ANONYMOUS, settings=settings, sender=sender)
    assert queue.get(other_partition, job.id) is None
    assert queue.request_cancel(other_partition, job.id, MACHINERY) is None
    assert queue.claim(other_partition, job.id, "w") is None
    assert service.list_jobs(database, other_partition, caller=ANONYMOUS) == []
    # And the victim's job is untouched
    mine = service.status(database, partition, job.id, caller=ANONYMOUS)
    assert mine.state == JobStatus.QUEUED and [
        j.id for j in service.list_jobs(database, partition, caller=ANONYMOUS)
    ] == [job.id]


def test_submit_stores_the_job_then_sends_one_orchestrate_message(
    database: Database, settings: Settings, partition: str
) -> None:
    # Given a recording broker
    sender = RecordingSender()
    # When a job is submitted
    job = service.submit(
        database,
        partition,
        KIND,
        {"parts": 2},
        caller=ANONYMOUS,
        settings=settings,
        sender=sender,
        request_url="http://x/$op",
    )
    # Then it is stored (queued, with its request) and exactly one orchestrate message names it
    stored = JobQueue(database).get(partition, job.id)
    assert stored is not None and stored.status == JobStatus.QUEUED and stored.is_group
    assert stored.request_url == "http://x/$op"
    assert [(m.actor, m.partition, m.job_id) for m in sender.sent] == [("orchestrate", partition, job.id)]


def test_submit_refuses_a_job_beyond_the_partitions_concurrency_limit(
    database: Database, settings: Settings, partition: str, other_partition: str
) -> None:
    # Given two active jobs of a kind in a partition whose limit is two
    sender = RecordingSender()
    for _ in range(2):
        service.submit(
            database,
            partition,
            KIND,
            {},
            caller=ANONYMOUS,
            settings=settings,
            sender=sender,
            max_concurrent=2,
        )
    # When a third is submitted there, and one in another partition
    with pytest.raises(TooManyRequests) as refused:
        service.submit(
            database,
            partition,
            KIND,
            {},
            caller=ANONYMOUS,
            settings=settings,
            sender=sender,
            max_concurrent=2,
        )
    elsewhere = service.submit(
        database,
        other_partition,
        KIND,
        {},
        caller=ANONYMOUS,
        settings=settings,
        sender=sender,
        max_concurrent=2,
    )
    # Then the third is refused with a Retry-After, and nothing was stored for it; the other partition runs
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert len(service.list_jobs(database, partition, caller=ANONYMOUS)) == 2
    assert elsewhere.status == JobStatus.QUEUED


def test_a_cancelled_job_no_longer_counts_towards_the_limit(
    database: Database, settings: Settings, partition: str
) -> None:
    # Given a partition at its limit of one job
    sender = RecordingSender()
    first = service.submit(
        database, partition, KIND, {}, caller=ANONYMOUS, settings=settings, sender=sender, max_concurrent=1
    )
    # When that job is cancelled
    service.cancel(database, partition, first.id, caller=ANONYMOUS, settings=settings, sender=sender)
    # Then a new one is accepted
    second = service.submit(
        database, partition, KIND, {}, caller=ANONYMOUS, settings=settings, sender=sender, max_concurrent=1
    )
    assert second.id != first.id


def test_cancel_of_a_queued_job_ends_it_at_once_and_later_requests_are_not_found(
    database: Database, settings: Settings, partition: str
) -> None:
    # Given a job nobody has planned yet
    sender = RecordingSender()
    job = service.submit(
        database, partition, KIND, {"parts": 3}, caller=ANONYMOUS, settings=settings, sender=sender
    )
    # When it is cancelled
    service.cancel(database, partition, job.id, caller=ANONYMOUS, settings=settings, sender=sender)
    # Then it is cancelled at once, has no processing jobs, and every later status or cancel is 404
    stored = JobQueue(database).get(partition, job.id)
    assert stored is not None and stored.status == JobStatus.CANCELLED and stored.ended_at is not None
    assert JobQueue(database).parts(partition, job.id) == []
    with pytest.raises(NotFound):
        service.status(database, partition, job.id, caller=ANONYMOUS)
    with pytest.raises(NotFound):
        service.cancel(database, partition, job.id, caller=ANONYMOUS, settings=settings, sender=sender)


def test_cancel_cancels_queued_work_at_once_and_flags_running_work(queue: JobQueue, partition: str) -> None:
    # Given a group with one running and two queued processing jobs
    group_id, parts = planned_group(queue, partition, parts=3)
    running = queue.claim(partition, parts[0].id, "worker")
    assert running is not None
    # When the group is cancelled
    queue.request_cancel(partition, group_id, MACHINERY)
    # Then the queued jobs are cancelled, the running one is asked to stop, and none can be claimed
    after = {p.id: p for p in queue.parts(partition, group_id)}
    assert after[parts[0].id].status == JobStatus.RUNNING and after[parts[0].id].cancel_requested
    assert {after[p.id].status for p in parts[1:]} == {JobStatus.CANCELLED}
    assert queue.claim(partition, parts[1].id, "worker") is None


def test_the_status_view_counts_parts_and_sums_their_progress(
    database: Database, queue: JobQueue, partition: str
) -> None:
    # Given a group with three parts: one done, one running with progress, one queued
    group_id, parts = planned_group(queue, partition, parts=3)
    a = queue.claim(partition, parts[0].id, "w")
    b = queue.claim(partition, parts[1].id, "w")
    assert a is not None and b is not None
    queue.complete(partition, a.id, a.version, {}, {"resources": 100})
    queue.heartbeat(partition, b.id, b.version, {"resources": 40, "part": "Patient"})
    # When the client asks for its status
    view = service.status(database, partition, group_id, caller=ANONYMOUS)
    # Then the parts are counted and the numeric progress summed
    assert view.state == JobStatus.RUNNING
    assert (view.parts, view.parts_done) == (3, 1)
    assert view.progress == {"resources": 140}
    assert view.progress_text == "1 of 3 parts done, 140 resources"
    assert view.result is None and view.error is None


def test_a_job_of_one_client_is_not_found_for_another_client_of_the_same_partition(
    database: Database, settings: Settings, partition: str
) -> None:
    # Given a job client X submitted in a partition
    sender = RecordingSender()
    owner, other = JobCaller("client-x"), JobCaller("client-y")
    job = service.submit(
        database, partition, KIND, {"parts": 1}, caller=owner, settings=settings, sender=sender
    )
    queue = JobQueue(database)
    # When client Y of the same partition (and the anonymous client) asks for it by its id
    # Then status, cancel, the queue's lookups and the listing all behave as for an unknown id
    for stranger in (other, ANONYMOUS):
        with pytest.raises(NotFound) as status:
            service.status(database, partition, job.id, caller=stranger)
        with pytest.raises(NotFound):
            service.cancel(database, partition, job.id, caller=stranger, settings=settings, sender=sender)
        assert queue.find_group(partition, job.id, stranger) is None
        assert queue.request_cancel(partition, job.id, stranger) is None
        assert service.list_jobs(database, partition, caller=stranger) == []
        # And the answer is word for word the one for an id that never existed
        with pytest.raises(NotFound) as unknown:
            service.status(database, partition, "0" * 32, caller=stranger)
        assert status.value.message.replace(job.id, "ID") == unknown.value.message.replace("0" * 32, "ID")
    # And X's job is untouched and still X's
    stored = queue.get(partition, job.id)
    assert stored is not None and stored.client_id == "client-x"
    assert stored.status == JobStatus.QUEUED and not stored.cancel_requested
    assert service.status(database, partition, job.id, caller=owner).state == JobStatus.QUEUED
    assert [j.id for j in service.list_jobs(database, partition, caller=owner)] == [job.id]


def test_an_administrator_sees_and_cancels_every_clients_jobs(
    database: Database, settings: Settings, partition: str
) -> None:
    # Given jobs of two clients in a partition
    sender = RecordingSender()
    jobs = [
        service.submit(
            database, partition, KIND, {"parts": 1}, caller=JobCaller(c), settings=settings, sender=sender
        )
        for c in ("client-x", "client-y")
    ]
    admin = JobCaller("operator", every_client=True)
    # When an administrator lists them, polls one and cancels the other
    listed = {j.id for j in service.list_jobs(database, partition, caller=admin)}
    polled = service.status(database, partition, jobs[0].id, caller=admin)
    cancelled = service.cancel(
        database, partition, jobs[1].id, caller=admin, settings=settings, sender=sender
    )
    # Then it sees both and the cancel takes effect; the job keeps its owner
    assert listed == {j.id for j in jobs}
    assert polled.state == JobStatus.QUEUED
    assert cancelled.status == JobStatus.CANCELLED and cancelled.client_id == "client-y"


def test_with_authentication_off_every_caller_is_the_same_anonymous_client(
    database: Database, settings: Settings, partition: str
) -> None:
    # Given a job submitted with no client (authentication off)
    sender = RecordingSender()
    job = service.submit(database, partition, KIND, {}, caller=ANONYMOUS, settings=settings, sender=sender)
    # When the anonymous caller polls, lists and cancels it, and a named client asks for it
    polled = service.status(database, partition, job.id, caller=ANONYMOUS)
    listed = [j.id for j in service.list_jobs(database, partition, caller=ANONYMOUS)]
    with pytest.raises(NotFound):
        service.status(database, partition, job.id, caller=JobCaller("client-x"))
    service.cancel(database, partition, job.id, caller=ANONYMOUS, settings=settings, sender=sender)
    # Then the anonymous caller owns it as before: it sees it, lists it and cancels it
    assert polled.state == JobStatus.QUEUED and listed == [job.id]
    stored = JobQueue(database).get(partition, job.id)
    assert stored is not None and stored.client_id is None and stored.status == JobStatus.CANCELLED
