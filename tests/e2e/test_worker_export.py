"""A real ``$export`` job through real orchestrator and worker processes, with a worker killed in the middle.

The planner, processor and manifest are the export's own; ``tests/support/slow_export.py`` only makes each
processing job wait 0.3 s first, so that processing jobs are certainly running when the worker dies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from core.exportspec import ExportSpec
from core.fhirdates import format_instant
from core.jobs import ANONYMOUS, JobInfo, JobStatus
from harness.cluster import (
    JobCluster,
    JobProcess,
    job_environ,
    migrated_database,
    unique_namespace,
    wait_for,
    wait_for_status,
)
from harness.services import S3Settings, app_database
from orchestrator import service
from storage import Database
from storage.bulkwrite import stamp_new, write_new_resources
from storage.jobs import JobQueue
from storage.objectstore import S3ObjectStore, object_store_from_settings
from tests.support.exported import entry_bytes
from workers.broker import close_outboxes

ENDED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
PATIENTS = 1500


@pytest.fixture(scope="module")
def export_db_url(owner_database_url: str) -> Iterator[str]:
    """Yield the application URL of a migrated database of this module's own."""
    with migrated_database(owner_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def export_db(export_db_url: str) -> Iterator[Database]:
    """Yield a handle on the module's database."""
    db = app_database(export_db_url)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def export_cluster(export_db_url: str, redis_url: str, s3_settings: S3Settings) -> Iterator[JobCluster]:
    """Yield an orchestrator and a worker exporting in chunks of about 16 KB (many processing jobs)."""
    logs = Path(tempfile.mkdtemp(prefix="bulkhead-export-"))
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": export_db_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            "BULKHEAD_JOB_MODULES": "tests.support.slow_export",
            "BULKHEAD_EXPORT_CHUNK_BYTES": "16384",
            **s3_settings.environ(),
        }
    )
    cluster = JobCluster(env, logs)
    cluster.orchestrator()
    cluster.worker()
    yield cluster
    cluster.stop()
    close_outboxes()
    shutil.rmtree(logs, ignore_errors=True)


def seed(db: Database, partition: str, marker: str) -> set[tuple[str, str]]:
    """Store Patients and Observations with fixed ids in ``partition``, marked with ``marker``; return ids."""
    when = datetime.now(UTC) - timedelta(seconds=5)
    resources = []
    for i in range(PATIENTS):
        resources.append(
            {"resourceType": "Patient", "id": f"p{i}", "gender": "other", "name": [{"text": marker}]}
        )
        resources.append(
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"text": marker},
                "subject": {"reference": f"Patient/p{i}"},
            }
        )
    write_new_resources(db, partition, (stamp_new(r, when) for r in resources), index=False)
    return {(r["resourceType"], r["id"]) for r in resources}


def signal_workers(workers: list[JobProcess], sig: signal.Signals) -> None:
    """Send ``sig`` to every process of each worker's process group."""
    for process in workers:
        assert process.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, sig)


def test_a_worker_killed_mid_export_leaves_each_resource_exported_once_and_none_of_another_partition(
    export_cluster: JobCluster, export_db: Database, partition: str, other_partition: str
) -> None:
    # Given the same ids in two partitions, each resource marked with its partition
    expected = seed(export_db, partition, "mine")
    seed(export_db, other_partition, "theirs")
    # And an export of the first partition running on the worker
    definition = {"spec": ExportSpec().to_json(), "transaction_time": format_instant(datetime.now(UTC))}
    job = service.submit(
        export_db, partition, "export", definition, caller=ANONYMOUS, settings=export_cluster.settings
    )
    queue = JobQueue(export_db)

    def midway() -> list[JobInfo]:
        parts = queue.parts(partition, job.id)
        done = sum(p.status == JobStatus.COMPLETED for p in parts)
        running = [p for p in parts if p.status == JobStatus.RUNNING]
        return running if done >= 3 and running else []

    workers = [p for p in export_cluster.processes if p.name == "worker" and p.running()]
    # When the worker is frozen (SIGSTOP) while parts run, then killed with SIGKILL, and another one starts
    # (frozen first, so that the parts seen running are the ones it held: ranges end fast)
    victims: set[str] = set()
    for _ in range(20):
        wait_for(midway, timeout=90, what="the export to be midway")
        signal_workers(workers, signal.SIGSTOP)
        victims = {p.id for p in queue.parts(partition, job.id) if p.status == JobStatus.RUNNING}
        if victims:
            break
        signal_workers(workers, signal.SIGCONT)
    for process in workers:
        process.kill()
    assert victims
    export_cluster.worker()
    # Then the export completes
    wait_for_status(export_db, partition, job.id, ENDED, timeout=120, cluster=export_cluster)
    view = service.status(export_db, partition, job.id, caller=ANONYMOUS)
    assert view.state == JobStatus.COMPLETED, export_cluster.logs()
    assert view.result is not None
    # And every resource of the partition is in the output exactly once, with nothing of the other partition
    store: S3ObjectStore = object_store_from_settings(export_cluster.settings)
    seen: Counter[tuple[str, str]] = Counter()
    for entry in view.result["output"]:
        lines = entry_bytes(store, entry).splitlines()
        assert len(lines) == entry["count"]
        for line in lines:
            resource = orjson.loads(line)
            seen[(resource["resourceType"], resource["id"])] += 1
            marker = resource.get("code", {}).get("text") or resource["name"][0]["text"]
            assert marker == "mine"
    assert set(seen) == expected
    assert max(seen.values()) == 1
    assert sum(entry["count"] for entry in view.result["output"]) == len(expected)
    # And the killed processing jobs were taken over: each ran twice, every other one once
    parts = queue.parts(partition, job.id)
    assert len(parts) >= 10
    assert {p.id for p in parts if p.attempts == 2} == victims
    assert all(p.attempts == 1 for p in parts if p.id not in victims)
