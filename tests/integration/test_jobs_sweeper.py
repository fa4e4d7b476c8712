"""The sweeper, driven in the test process on PostgreSQL and S3: stale heartbeats, lost messages, expiry.

A job whose worker went silent is taken over and, at the attempt cap, failed with an OperationOutcome; a job
that only its timer heartbeat keeps alive is left alone; messages a broker lost are sent again; expired jobs
go with their objects.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from core.jobs import ANONYMOUS, JobStatus
from core.settings import Settings
from orchestrator import service
from orchestrator.sweeper import sweep
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.jobinproc import RecordingSender, age, deliver, drain, make_resources, objects, submit
from workers.resources import WorkerResources


@pytest.fixture
def machinery(
    settings: Settings, database: Database, object_store: S3ObjectStore
) -> Iterator[tuple[WorkerResources, RecordingSender]]:
    """Return in-process job machinery (fast timings) and the sender that records its messages."""
    yield make_resources(settings, database, object_store)


def test_a_job_that_reports_no_progress_is_kept_alive_by_its_timer_heartbeat(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a part that works longer than the stale limit (2 s) without reporting progress
    job_id = submit(resources, partition, parts=1, steps=30, step_seconds=0.1, report=False)
    [deliver(resources, m) for m in sender.take()]
    [release] = [m for m in sender.take() if m.actor == "process"]
    worker = threading.Thread(target=deliver, args=(resources, release))
    worker.start()
    # When the sweeper looks while it works, past the stale limit
    time.sleep(2.5)
    sweep(resources)
    worker.join(timeout=10)
    # Then nobody took it over: it completed on its first attempt
    [part] = resources.queue.parts(partition, job_id)
    assert part.status == JobStatus.COMPLETED and part.attempts == 1


def test_the_sweeper_fails_a_job_whose_worker_stops_answering_at_every_attempt(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a part whose worker dies (stops heartbeating) after claiming it, at every attempt
    job_id = submit(resources, partition, parts=1)
    [deliver(resources, m) for m in sender.take()]
    [part] = resources.queue.parts(partition, job_id)
    for attempt in range(1, 4):
        claimed = resources.queue.claim(partition, part.id, f"doomed-{attempt}")
        assert claimed is not None and claimed.attempts == attempt
        age(resources.database, part.id, 60)
        # When the sweeper runs
        sweep(resources)
    # Then after the third attempt the job failed, with an OperationOutcome that says why
    [part] = resources.queue.parts(partition, job_id)
    assert part.status == JobStatus.FAILED
    drain(resources, sender, partition=partition)
    view = service.status(resources.database, partition, job_id, caller=ANONYMOUS)
    assert view.state == JobStatus.FAILED
    assert view.error is not None
    text_of = " ".join(i["diagnostics"] for i in view.error["issue"])
    assert "Gave up after 3 attempts" in text_of and "doomed-3" in text_of and "no heartbeat" in text_of


def test_the_sweeper_sends_again_the_messages_a_broker_lost(
    machinery: tuple[WorkerResources, RecordingSender], partition: str
) -> None:
    resources, sender = machinery
    # Given a job whose orchestrate message was lost, long ago
    job_id = submit(resources, partition, parts=2)
    sender.take()
    age(resources.database, job_id, 60, "released_at")
    # When the sweeper runs
    sweep(resources)
    # Then it sent the orchestrate message again
    resent = [m for m in sender.take() if m.partition == partition]
    assert [(m.actor, m.job_id) for m in resent] == [("orchestrate", job_id)]
    # Given then released processing messages that were lost too
    deliver(resources, resent[0])
    lost = [m for m in sender.take() if m.actor == "process"]
    assert len(lost) == 2
    for m in lost:
        age(resources.database, m.job_id, 60, "released_at")
    # When the sweeper runs again
    sweep(resources)
    # Then both are sent again, and the job completes
    again = [m for m in sender.take() if m.partition == partition]
    assert sorted(m.job_id for m in again) == sorted(m.job_id for m in lost)
    for m in again:
        deliver(resources, m)
    drain(resources, sender, partition=partition)
    assert (
        service.status(resources.database, partition, job_id, caller=ANONYMOUS).state == JobStatus.COMPLETED
    )


def test_the_sweeper_deletes_expired_jobs_with_their_objects(
    machinery: tuple[WorkerResources, RecordingSender], partition: str, object_store: S3ObjectStore
) -> None:
    resources, sender = machinery
    # Given a completed job with objects, past its expiry
    job_id = submit(resources, partition, parts=2)
    drain(resources, sender, partition=partition)
    assert len(objects(object_store, partition, job_id)) == 2
    age(resources.database, job_id, 1, "expires_at")
    # When the sweeper runs
    sweep(resources)
    # Then the job and its objects are gone
    assert resources.queue.get(partition, job_id) is None
    assert resources.queue.parts(partition, job_id) == []
    assert objects(object_store, partition, job_id) == {}


def test_a_job_whose_worker_process_on_this_host_is_gone_is_taken_over_before_the_stale_limit(
    settings: Settings, database: Database, object_store: S3ObjectStore, partition: str
) -> None:
    # Given a stale limit of 60 s, heartbeats every second, and two parts claimed by workers of this host:
    # one whose process has exited, one whose process (this one) still runs; neither heartbeat for 5 s
    resources, sender = make_resources(
        settings, database, object_store, job_heartbeat_seconds=1.0, job_stale_seconds=60.0
    )
    job_id = submit(resources, partition, parts=2)
    [deliver(resources, m) for m in sender.take()]
    gone, alive = resources.queue.parts(partition, job_id)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    host = socket.gethostname()
    assert resources.queue.claim(partition, gone.id, f"{host}:{exited.pid}:MainThread") is not None
    assert resources.queue.claim(partition, alive.id, f"{host}:{os.getpid()}:MainThread") is not None
    for part in (gone, alive):
        age(resources.database, part.id, 5)
    sender.take()
    # When the sweeper runs
    report = sweep(resources)
    # Then only the part of the exited process is queued again (and sent), long before 60 s of silence
    by_id = {p.id: p for p in resources.queue.parts(partition, job_id)}
    assert report.taken_over == 1
    assert by_id[gone.id].status == JobStatus.QUEUED and by_id[alive.id].status == JobStatus.RUNNING
    sent = {m.job_id for m in sender.take() if m.actor == "process"}
    assert gone.id in sent and alive.id not in sent
