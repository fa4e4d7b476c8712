"""The orchestrator, the worker runtime and the sweeper, driven in the test process on PostgreSQL and S3.

Messages are recorded and delivered by the test (``tests/support/jobinproc.py``); the operation is the
test-only ``jobtest`` (``tests/support/jobops.py``), whose parts each write one object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from dramatiq.middleware import Shutdown

from core.errors import NotFound
from core.jobs import ANONYMOUS, JobStatus
from core.settings import Settings
from orchestrator import service
from orchestrator.lifecycle import advance_group
from orchestrator.sweeper import sweep
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.jobinproc import RecordingSender, age, deliver, drain, make_resources, objects, submit
from workers import runtime
from workers.resources import WorkerResources
from workers.runtime import run_processing_job


@pytest.fixture
def machinery(
    settings: Settings, database: Database, object_store: S3ObjectStore
) -> Iterator[tuple[WorkerResources, RecordingSender]]:
    """Return in-process job machinery (fast timings) and the sender that records its messages."""
    yield make_resources(settings, database, object_store)


def test_a_job_is_planned_processed_and_finished_with_every_part_written_once(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, object_store: S3ObjectStore
) -> None:
    resources, sender = machinery
    # Given a submitted job of five parts of four lines each
    job_id = submit(resources, partition, parts=5, lines=4)
    # When every message is delivered
    drain(resources, sender, partition=partition)
    # Then the group completed, with one object per part, each written once
    view = service.status(resources.database, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.COMPLETED
    assert view.result is not None and view.result["count"] == 20
    written = objects(object_store, partition, job_id)
    assert sorted(written) == sorted(view.result["files"])
    assert all(body.count(b"\n") == 4 for body in written.values())
    parts = resources.queue.parts(partition, job_id)
    assert [p.attempts for p in parts] == [1] * 5
    # And no more than the per-job window was ever in flight: each release sent at most 2 messages at once
    assert view.expires_at is not None and view.ended_at is not None
    assert view.expires_at - view.ended_at == timedelta(hours=resources.settings.job_expiry_hours)


def test_a_duplicated_message_changes_nothing(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, object_store: S3ObjectStore
) -> None:
    resources, sender = machinery
    # Given a completed job
    job_id = submit(resources, partition, parts=2)
    drain(resources, sender, partition=partition)
    before = {p.id: p for p in resources.queue.parts(partition, job_id)}
    group_before = resources.queue.get(partition, job_id)
    written = objects(object_store, partition, job_id)
    # When every message it ever sent is delivered again
    outcomes = [deliver(resources, m) for m in list(sender.sent) if m.partition == partition]
    # Then each processing message is skipped, and no row or object changed
    assert outcomes.count("skipped") == 2
    after = {p.id: p for p in resources.queue.parts(partition, job_id)}
    assert after == before
    assert resources.queue.get(partition, job_id) == group_before
    assert objects(object_store, partition, job_id) == written


def test_a_plan_stored_before_a_crash_is_not_stored_again(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose orchestrator stored the plan, then died before releasing anything
    job_id = submit(resources, partition, parts=3)
    sender.clear()
    planning = resources.queue.start_planning(partition, job_id, "dead-orchestrator")
    assert planning is not None
    stored = resources.queue.store_plan(
        partition, job_id, planning.version, [{"n": n, "lines": 1} for n in range(3)], max_attempts=3
    )
    assert stored == 3
    # When the orchestrate message is delivered again, twice
    advance_group(resources, partition, job_id)
    advance_group(resources, partition, job_id)
    drain(resources, sender, partition=partition)
    # Then the job completes with its three parts, none duplicated
    assert len(resources.queue.parts(partition, job_id)) == 3
    assert (
        service.status(resources.database, partition, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
    )


def test_a_transient_failure_is_retried_with_back_off_then_completes(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose parts fail on their first attempt
    job_id = submit(resources, partition, parts=2, fail_attempts=1)
    # When every message is delivered
    outcomes = drain(resources, sender, partition=partition)
    # Then each part was requeued once, with a back-off delay, and the job completed on the second attempts
    assert outcomes.count("requeued") == 2
    retries = [m for m in sender.sent if m.actor == "process" and m.delay_seconds]
    assert len(retries) == 2 and all(m.delay_seconds == pytest.approx(0.05) for m in retries)
    assert [p.attempts for p in resources.queue.parts(partition, job_id)] == [2, 2]
    assert (
        service.status(resources.database, partition, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
    )


def test_a_job_that_keeps_failing_fails_at_the_attempt_cap_with_an_operation_outcome(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose part fails on every attempt (the cap is 3)
    job_id = submit(resources, partition, parts=1, fail_attempts=99)
    # When every message is delivered
    drain(resources, sender, partition=partition)
    # Then the part ran three times and the group failed, saying why
    [part] = resources.queue.parts(partition, job_id)
    assert part.status == JobStatus.FAILED and part.attempts == 3
    view = service.status(resources.database, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.FAILED and view.http_status == 500
    assert view.error is not None and view.error["resourceType"] == "OperationOutcome"
    diagnostics = " ".join(i["diagnostics"] for i in view.error["issue"])
    assert "Gave up after 3 attempts" in diagnostics
    assert "RuntimeError: part 0 failed on attempt 3" in diagnostics
    assert "processing job 1 of 1 failed" in diagnostics


def test_a_permanent_failure_fails_the_group_at_once_and_cancels_the_rest(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose second part refuses to run (an error of the request)
    job_id = submit(resources, partition, parts=6, refuse_part=1)
    # When every message is delivered
    drain(resources, sender, partition=partition)
    # Then that part failed on its first attempt, the group failed with its reason and the request's status
    parts = resources.queue.parts(partition, job_id)
    assert parts[1].status == JobStatus.FAILED and parts[1].attempts == 1
    view = service.status(resources.database, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.FAILED and view.http_status == 400
    assert view.error is not None
    assert view.error["issue"][0] == {
        "severity": "error",
        "code": "invalid",
        "diagnostics": "Part 1 refuses to run",
    }
    # And the parts not yet released were cancelled rather than run
    assert {p.status for p in parts[2:]} <= {JobStatus.CANCELLED, JobStatus.COMPLETED}
    assert any(p.status == JobStatus.CANCELLED for p in parts)


def test_a_plan_refused_for_good_fails_the_group_with_its_reason(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose planner refuses it
    job_id = submit(resources, partition, refuse_plan=True)
    # When its orchestrate message is delivered
    drain(resources, sender, partition=partition)
    # Then it failed without processing jobs, saying why
    view = service.status(resources.database, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.FAILED and view.parts == 0
    assert view.error is not None and view.error["issue"][0]["diagnostics"] == "This job cannot be planned"


def test_a_running_job_that_reports_no_progress_still_stops_at_its_next_heartbeat_when_cancelled(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, object_store: S3ObjectStore
) -> None:
    resources, sender = machinery
    # Given a job whose only part works for 20 s (in short steps: an asynchronous exception cannot break into
    # one long system call) without ever reporting progress, running on a worker thread
    job_id = submit(resources, partition, parts=1, steps=200, step_seconds=0.1, report=False)
    drain_planning = [deliver(resources, m) for m in sender.take()]
    assert drain_planning == ["running"]
    [release] = [m for m in sender.take() if m.actor == "process"]
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(deliver(resources, release)))
    started = time.monotonic()
    worker.start()
    while resources.queue.parts(partition, job_id)[0].status != JobStatus.RUNNING:
        time.sleep(0.05)
    # When the client cancels
    service.cancel(
        resources.database, partition, job_id, caller=ANONYMOUS, settings=resources.settings, sender=sender
    )
    worker.join(timeout=10)
    # Then the worker stopped within a few heartbeats (not after 20 s) and wrote nothing
    assert not worker.is_alive() and outcome == ["cancelled"]
    assert time.monotonic() - started < 5
    drain(resources, sender, partition=partition)
    group = resources.queue.get(partition, job_id)
    assert group is not None and group.status == JobStatus.CANCELLED
    assert objects(object_store, partition, job_id) == {}
    with pytest.raises(NotFound):
        service.status(resources.database, partition, job_id, caller=ANONYMOUS)


def test_a_worker_whose_job_was_taken_over_stops_and_the_new_owner_finishes_it(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, object_store: S3ObjectStore
) -> None:
    resources, sender = machinery
    # Given a part running on worker A (reporting progress as it goes)
    job_id = submit(resources, partition, parts=1, steps=40, step_seconds=0.1, lines=5)
    [deliver(resources, m) for m in sender.take()]
    [release] = [m for m in sender.take() if m.actor == "process"]
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(deliver(resources, release)))
    worker.start()
    while resources.queue.parts(partition, job_id)[0].status != JobStatus.RUNNING:
        time.sleep(0.05)
    # When its heartbeat looks stale to the sweeper (a long pause, say) and the sweeper takes it over
    [part] = resources.queue.parts(partition, job_id)
    age(resources.database, part.id, 60)
    taken = resources.queue.stale(resources.settings.job_stale_seconds)
    assert part.id in [j.id for j in taken]
    sweep(resources)
    worker.join(timeout=10)
    # Then worker A stops at its next heartbeat without completing, and the new attempt completes the job
    assert outcome == ["fenced"]
    drain(resources, sender, partition=partition)
    [part] = resources.queue.parts(partition, job_id)
    assert part.status == JobStatus.COMPLETED and part.attempts == 2
    assert part.result is not None and part.result["attempt"] == 2
    [body] = objects(object_store, partition, job_id).values()
    assert body.count(b"\n") == 5
    assert (
        service.status(resources.database, partition, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
    )


def test_cancel_while_planning_stops_the_planner_and_stores_no_plan(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose planning takes 20 s, planning on an orchestrator thread
    job_id = submit(resources, partition, parts=5, plan_seconds=20)
    [orchestrate] = sender.take()
    outcome: list[str] = []
    planner = threading.Thread(target=lambda: outcome.append(deliver(resources, orchestrate)))
    planner.start()
    while (group := resources.queue.get(partition, job_id)) is None or group.status != JobStatus.PLANNING:
        time.sleep(0.05)
    # When the client cancels
    service.cancel(
        resources.database, partition, job_id, caller=ANONYMOUS, settings=resources.settings, sender=sender
    )
    planner.join(timeout=10)
    # Then planning stopped at once, the job is cancelled and no processing job was stored
    assert not planner.is_alive() and outcome == ["cancelled"]
    group = resources.queue.get(partition, job_id)
    assert group is not None and group.status == JobStatus.CANCELLED
    assert resources.queue.parts(partition, job_id) == []


def test_cancel_after_completion_hides_the_job_and_its_objects_go(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, object_store: S3ObjectStore
) -> None:
    resources, sender = machinery
    # Given a completed job with its objects
    job_id = submit(resources, partition, parts=2)
    drain(resources, sender, partition=partition)
    # When the client deletes it
    service.cancel(
        resources.database, partition, job_id, caller=ANONYMOUS, settings=resources.settings, sender=sender
    )
    drain(resources, sender, partition=partition)
    sweep(resources)
    # Then every later request is 404, and its objects and rows are gone
    with pytest.raises(NotFound):
        service.status(resources.database, partition, job_id, caller=ANONYMOUS)
    assert objects(object_store, partition, job_id) == {}
    assert resources.queue.get(partition, job_id) is None


def test_a_message_for_a_job_of_another_partition_does_nothing(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, other_partition: str
) -> None:
    resources, sender = machinery
    # Given a planned job in one partition
    job_id = submit(resources, partition, parts=1)
    [deliver(resources, m) for m in sender.take()]
    [release] = [m for m in sender.take() if m.actor == "process"]
    # When messages name its ids under another partition
    # Then nothing runs and nothing changes
    assert run_processing_job(resources, other_partition, release.job_id) == "skipped"
    assert advance_group(resources, other_partition, job_id) == "missing"
    [part] = resources.queue.parts(partition, job_id)
    assert part.status == JobStatus.QUEUED and part.attempts == 0


@pytest.mark.parametrize("failure", [Shutdown, RuntimeError])
def test_a_failure_while_a_claimed_job_is_being_set_up_never_leaves_it_running(
    machinery: tuple[WorkerResources, RecordingSender],
    partition: str,
    monkeypatch: pytest.MonkeyPatch,
    failure: type[BaseException],
) -> None:
    resources, sender = machinery
    # Given a released part, and a worker whose set-up of the job fails right after the claim (a shutdown
    # arriving while the first job of the process builds its object store client, or an error there)
    job_id = submit(resources, partition, parts=1)
    [deliver(resources, m) for m in sender.take()]
    [release] = [m for m in sender.take() if m.actor == "process"]

    def broken(*args: object, **kwargs: object) -> object:
        raise failure("while setting up")

    monkeypatch.setattr(runtime.JobContext, "of", broken)
    # When the worker takes the message
    outcome = run_processing_job(resources, partition, release.job_id)
    # Then the part is back in the queue (a shutdown does not count the attempt) and its message sent again
    [part] = resources.queue.parts(partition, job_id)
    assert outcome == "requeued" and part.status == JobStatus.QUEUED
    assert part.attempts == (0 if failure is Shutdown else 1)
    resent = [m for m in sender.take() if m.actor == "process"]
    assert [m.job_id for m in resent] == [part.id]
    # And once set-up works again, the job completes
    monkeypatch.undo()
    assert [deliver(resources, m) for m in resent] == ["completed"]
    drain(resources, sender, partition=partition)
    assert (
        service.status(resources.database, partition, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
    )
