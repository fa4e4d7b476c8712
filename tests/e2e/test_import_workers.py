"""``$import`` with real orchestrator and worker processes: a worker killed mid-import, two partitions.

The API runs in the test process (Flask test client) and sends its messages to a Redis namespace of this
test's own, which ``bulkhead orchestrator`` and ``bulkhead worker`` subprocesses consume.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner
from sqlalchemy import text

from api import create_app
from cli.main import main
from core.settings import Settings
from harness.cluster import PUBLIC_BASE, JobCluster, wait_for
from harness.services import S3Settings
from storage import Database
from storage.jobs import JobQueue
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base
from tests.support.http_app import app_for, served
from tests.support.http_files import FileServer


def client_for(cluster: JobCluster, database: Database, store: S3ObjectStore) -> Any:
    """Return a test client of an application that sends its jobs to the cluster's queues."""
    settings: Settings = cluster.settings
    app = create_app(settings, database=database)
    app.extensions["bulkhead.objectstore"] = store
    return app.test_client()


def kick_off(client: Any, partition: str, url: str, **extra: str) -> str:
    """Start an import of one file; return its status path."""
    params: list[dict[str, Any]] = [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]
    params += [{"name": k, "valueString": v} for k, v in extra.items()]
    params.append(
        {
            "name": "input",
            "part": [{"name": "url", "valueUrl": url}, {"name": "type", "valueCode": "Patient"}],
        }
    )
    response = client.post(
        f"{base(partition)}/$import",
        json={"resourceType": "Parameters", "parameter": params},
        headers={"Content-Type": "application/fhir+json", "Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.get_json()
    return str(response.headers["Content-Location"])[len(PUBLIC_BASE) :]


def wait_done(client: Any, path: str, cluster: JobCluster, timeout: float = 120.0) -> dict[str, Any]:
    """Poll until the import is no longer running; return its 200 body."""

    def done() -> Any:
        response = client.get(path)
        return response if response.status_code != 202 else None

    try:
        response = wait_for(done, timeout=timeout, interval=0.3, what=path)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    assert response.status_code == 200, f"{response.get_json()}\n{cluster.logs()}"
    return dict(response.get_json())


def patient_rows(database: Database, partition: str) -> list[tuple[str, int, bool]]:
    """Return (id, version, is_history) of every Patient version stored in the partition."""
    with database.unit_of_work(partition) as uow:
        rows = uow.session.execute(
            text("SELECT resource_id, version, is_history FROM resource WHERE resource_type = 'Patient'")
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def lines(n: int, family: str) -> bytes:
    """Return ``n`` patients p0.. as NDJSON."""
    return b"".join(
        orjson.dumps(
            {"resourceType": "Patient", "id": f"p{i}", "name": [{"family": family, "given": [f"G{i}"]}]}
        )
        + b"\n"
        for i in range(n)
    )


def test_a_worker_killed_mid_import_leaves_every_resource_exactly_once_after_takeover(
    cluster: JobCluster, database: Database, object_store: S3ObjectStore, files: FileServer, partition: str
):
    # Given an import of 3000 patients in about 90 ranges, and one worker that takes its time
    url = files.put(f"/{partition}/big.ndjson", lines(3000, "Killed"))
    cluster.orchestrator()
    first = cluster.worker("--threads", "1")
    client = client_for(cluster, database, object_store)
    path = kick_off(client, partition, url, processingUnitBytesToRead="2048")
    job_id = path.rsplit("/", 1)[1]
    queue = JobQueue(database)

    def some_done() -> bool:
        summary = queue.summary(partition, job_id)
        return 3 <= summary.done < summary.total

    wait_for(some_done, timeout=60, interval=0.05, what="a few ranges to complete")
    # When the worker is killed with SIGKILL in the middle, and another one starts
    first.kill()
    cluster.worker("--threads", "2")
    body = wait_done(client, path, cluster)
    # Then the import completed with every patient stored once, as version 1
    assert body["output"] == [{"type": "Patient", "count": 3000, "inputUrl": url}] and body["error"] == []
    rows = patient_rows(database, partition)
    assert len(rows) == 3000
    assert {(v, h) for _id, v, h in rows} == {(1, False)}
    assert len({rid for rid, _v, _h in rows}) == 3000


def test_two_partitions_import_the_same_ids_through_the_workers_without_touching_each_other(
    cluster: JobCluster,
    database: Database,
    object_store: S3ObjectStore,
    files: FileServer,
    partition: str,
    other_partition: str,
):
    # Given the same ids with different names, for two partitions, and a running fleet
    url_a = files.put(f"/{partition}/a.ndjson", lines(200, "Alpha"))
    url_b = files.put(f"/{partition}/b.ndjson", lines(200, "Beta"))
    cluster.orchestrator()
    cluster.worker()
    client = client_for(cluster, database, object_store)
    # When both are imported at once
    path_a = kick_off(client, partition, url_a)
    path_b = kick_off(client, other_partition, url_b, validation="structural")
    body_a, body_b = wait_done(client, path_a, cluster), wait_done(client, path_b, cluster)
    # Then each partition has its own 200 and the other's job is 404 from it
    assert body_a["output"][0]["count"] == body_b["output"][0]["count"] == 200
    assert client.get(f"{base(partition)}/Patient/p7").get_json()["name"][0]["family"] == "Alpha"
    assert client.get(f"{base(other_partition)}/Patient/p7").get_json()["name"][0]["family"] == "Beta"
    assert client.get(path_a.replace(partition, other_partition, 1)).status_code == 404
    assert client.get(f"{base(partition)}/Patient?family=Alpha&_total=accurate").get_json()["total"] == 200


def test_the_import_command_uploads_a_local_gzip_file_and_prints_the_counts(
    cluster: JobCluster,
    database: Database,
    object_store: S3ObjectStore,
    s3_settings: S3Settings,
    partition: str,
    tmp_path: Path,
):
    # Given a local gzip NDJSON file with one bad line, a running fleet and an API served over HTTP
    path = tmp_path / "patients.ndjson.gz"
    path.write_bytes(gzip.compress(lines(50, "Local") + b"{not json}\n"))
    cluster.orchestrator()
    cluster.worker()
    app = app_for(cluster.settings, database, object_store)
    with served(app) as root:
        # When `bulkhead import` runs against the partition's base
        result = CliRunner().invoke(
            main,
            ["import", "--base", f"{root}/partitions/{partition}", str(path)],
            env=s3_settings.environ(),
            catch_exceptions=False,
        )
    # Then it printed 50 patients and one error file, and exited 2 for the refused line
    assert result.exit_code == 2, result.output
    assert "50 Patient" in result.output and "1 OperationOutcome" in result.output
    assert len(patient_rows(database, partition)) == 50
    assert any(
        k.startswith(f"bulkhead/{partition}/uploads/")
        for k in object_store.list_keys(f"bulkhead/{partition}/")
    )
