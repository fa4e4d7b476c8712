"""``$export`` over HTTP with real orchestrator and worker processes.

The API runs in the test process (Flask test client) and sends its messages to a Redis namespace of this
module's own, which ``bulkhead orchestrator`` and ``bulkhead worker`` subprocesses consume. Each export
processing job waits 0.3 s first (``tests/support/slow_export.py``, the real planner and processor) and
chunks are small, so that an export is certainly still running when a test cancels it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from cli.main import main
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for
from harness.services import S3Settings
from storage import Database
from storage.bulkwrite import stamp_new, write_new_resources
from storage.jobs import JobQueue
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base, put
from tests.support.http_app import app_for, served
from workers.broker import close_outboxes

PUBLIC = "http://bulkhead.test"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def cluster(database_url: str, redis_url: str, s3_settings: S3Settings) -> Iterator[JobCluster]:
    """Yield an orchestrator and a worker exporting in chunks of about 16 KB (many processing jobs)."""
    logs = Path(tempfile.mkdtemp(prefix="bulkhead-export-e2e-"))
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": database_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            "BULKHEAD_PUBLIC_BASE_URL": PUBLIC,
            "BULKHEAD_JOB_MODULES": "tests.support.slow_export",
            "BULKHEAD_EXPORT_CHUNK_BYTES": "16384",
            **s3_settings.environ(),
        }
    )
    jobs = JobCluster(env, logs)
    jobs.orchestrator()
    jobs.worker()
    yield jobs
    jobs.stop()
    close_outboxes()
    shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="module")
def api(cluster: JobCluster, database: Database, object_store: S3ObjectStore) -> FlaskClient:
    """Return a test client of an application that sends its jobs to the cluster's queues."""
    app = create_app(cluster.settings, database=database)
    app.extensions["bulkhead.objectstore"] = object_store
    return app.test_client()


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC), url
    return url[len(PUBLIC) :]


def kick_off(api: FlaskClient, partition: str | None, query: str = "") -> str:
    resp = api.get(f"{base(partition)}/$export{query}", headers=ASYNC)
    assert resp.status_code == 202, resp.data
    location: str = resp.headers["Content-Location"]
    assert location.startswith(f"{PUBLIC}{base(partition)}/_operations/export/")
    return location


def poll(
    api: FlaskClient, location: str, cluster: JobCluster, timeout: float = 120
) -> tuple[TestResponse, int]:
    """Poll until the export is no longer 202; return the final answer and how many 202s came before."""
    deadline = time.monotonic() + timeout
    accepted = 0
    while time.monotonic() < deadline:
        resp = api.get(path_of(location), headers={"Accept": "application/json"})
        if resp.status_code != 202:
            return resp, accepted
        accepted += 1
        assert resp.headers["Retry-After"].isdigit()
        assert 0 < len(resp.headers["X-Progress"]) < 100
        time.sleep(0.2)
    raise AssertionError(f"{location} still running\n{cluster.logs()}")


def download(api: FlaskClient, manifest: dict[str, Any], key: str = "output") -> list[dict[str, Any]]:
    """Download every file of a manifest section through the API; check each file's count."""
    resources: list[dict[str, Any]] = []
    for item in manifest[key]:
        resp = api.get(path_of(item["url"]))
        assert resp.status_code == 200 and resp.mimetype == "application/fhir+ndjson"
        lines = [orjson.loads(x) for x in resp.data.splitlines()]
        assert len(lines) == item["count"]
        assert {r["resourceType"] for r in lines} == {item["type"]}
        resources.extend(lines)
    return resources


def seed(database: Database, partition: str, marker: str, patients: int) -> set[tuple[str, str]]:
    """Store Patients and Observations with fixed ids in ``partition``, marked with ``marker``."""
    when = datetime.now(UTC) - timedelta(seconds=5)
    resources: list[dict[str, Any]] = []
    for i in range(patients):
        resources.append({"resourceType": "Patient", "id": f"p{i}", "name": [{"text": marker}]})
        resources.append(
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"text": marker},
                "subject": {"reference": f"Patient/p{i}"},
            }
        )
    write_new_resources(database, partition, (stamp_new(r, when) for r in resources), index=False)
    return {(r["resourceType"], r["id"]) for r in resources}


def marker_of(resource: dict[str, Any]) -> str:
    text: str = resource.get("code", {}).get("text") or resource["name"][0]["text"]
    return text


def test_an_export_kicked_off_over_http_downloads_exactly_what_the_partition_stores(
    api: FlaskClient, cluster: JobCluster, database: Database, partition: str, other_partition: str
) -> None:
    # Given the same ids in two partitions, marked with their partition
    expected = seed(database, partition, "mine", 300)
    seed(database, other_partition, "theirs", 300)
    # When the first partition is exported over HTTP and polled
    location = kick_off(api, partition)
    final, accepted = poll(api, location, cluster)
    # Then it answered 202 with progress while running, then 200 with the manifest
    assert accepted >= 1
    assert final.status_code == 200 and final.mimetype == "application/json", final.data
    assert "Expires" in final.headers
    manifest = final.get_json()
    assert manifest["request"] == f"{PUBLIC}/partitions/{partition}/$export"
    assert manifest["error"] == []
    assert len(manifest["output"]) > 2  # the small chunks split each type over several files
    # And the files, downloaded through the API, hold every stored resource once and nothing else
    resources = download(api, manifest)
    seen = Counter((r["resourceType"], r["id"]) for r in resources)
    assert set(seen) == expected and max(seen.values()) == 1
    assert {marker_of(r) for r in resources} == {"mine"}
    counts = Counter(item["type"] for item in manifest["output"] for _ in range(item["count"]))
    assert counts == {"Patient": 300, "Observation": 300}


def test_an_export_at_the_root_exports_the_default_partition_only(
    api: FlaskClient, cluster: JobCluster, partition: str
) -> None:
    # Given a Patient in the default partition and one with the same id in another partition
    rid = f"root-{partition}"
    put(api, f"/Patient/{rid}", {"resourceType": "Patient", "id": rid, "name": [{"text": "root"}]})
    put(
        api,
        f"{base(partition)}/Patient/{rid}",
        {"resourceType": "Patient", "id": rid, "name": [{"text": "p"}]},
    )
    # When the root base exports Patients
    location = kick_off(api, None, "?_type=Patient")
    final, _ = poll(api, location, cluster)
    # Then the manifest and file URLs are under the root, and only the default partition's Patient is there
    assert final.status_code == 200, final.data
    manifest = final.get_json()
    assert manifest["request"] == f"{PUBLIC}/$export?_type=Patient"
    assert all(item["url"].startswith(f"{PUBLIC}/_operations/export/") for item in manifest["output"])
    mine = [r for r in download(api, manifest) if r["id"] == rid]
    assert [r["name"][0]["text"] for r in mine] == ["root"]


def test_an_empty_partition_exports_an_empty_output_list(
    api: FlaskClient, cluster: JobCluster, partition: str
) -> None:
    # Given a partition with nothing in it
    # When it is exported
    final, _ = poll(api, kick_off(api, partition), cluster)
    # Then the manifest lists no file
    assert final.status_code == 200, final.data
    assert final.get_json()["output"] == [] and final.get_json()["error"] == []


def test_delete_after_completion_answers_202_then_the_status_and_files_are_404(
    api: FlaskClient, cluster: JobCluster, database: Database, partition: str
) -> None:
    # Given a completed export
    seed(database, partition, "mine", 20)
    location = kick_off(api, partition)
    final, _ = poll(api, location, cluster)
    files = [path_of(item["url"]) for item in final.get_json()["output"]]
    # When it is deleted
    assert api.delete(path_of(location)).status_code == 202
    # Then the status and every file are 404, and stay so
    for _ in range(2):
        assert api.get(path_of(location)).status_code == 404
        assert all(api.get(f).status_code == 404 for f in files)
    assert api.delete(path_of(location)).status_code == 404


def test_a_running_export_cancelled_over_http_stops_and_leaves_no_file(
    api: FlaskClient,
    cluster: JobCluster,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
) -> None:
    # Given an export of many processing jobs, running
    seed(database, partition, "mine", 1500)
    location = kick_off(api, partition)
    job_id = location.rsplit("/", 1)[-1]
    queue = JobQueue(database)
    wait_for(
        lambda: any(p.status == "running" for p in queue.parts(partition, job_id)),
        timeout=60,
        what="a running processing job",
    )
    # When the client deletes it
    assert api.delete(path_of(location)).status_code == 202
    # Then every poll is 404 at once
    assert api.get(path_of(location)).status_code == 404
    # And the job ends cancelled, with processing jobs left undone, and its objects are deleted
    wait_for(
        lambda: (job := queue.get(partition, job_id)) is not None and job.status == "cancelled",
        timeout=60,
        what="the export to be cancelled",
    )
    parts = queue.parts(partition, job_id)
    assert any(p.status != "completed" for p in parts)
    prefix = object_store.job_prefix(partition, job_id)
    wait_for(lambda: not list(object_store.list_keys(prefix)), timeout=60, what="the objects to go")


def test_a_since_export_from_the_transaction_time_picks_up_exactly_what_changed(
    api: FlaskClient, cluster: JobCluster, database: Database, partition: str
) -> None:
    # Given an export, and writes made while it runs (after its kick-off)
    seed(database, partition, "before", 30)
    first_location = kick_off(api, partition)
    put(
        api,
        f"{base(partition)}/Patient/late",
        {"resourceType": "Patient", "id": "late", "name": [{"text": "late"}]},
    )
    put(
        api,
        f"{base(partition)}/Patient/p1",
        {"resourceType": "Patient", "id": "p1", "name": [{"text": "changed"}]},
    )
    api.delete(f"{base(partition)}/Observation/o2")
    first, _ = poll(api, first_location, cluster)
    first_manifest = first.get_json()
    first_ids = {(r["resourceType"], r["id"]): marker_of(r) for r in download(api, first_manifest)}
    # When a follow-up export starts from the first one's transactionTime
    since = first_manifest["transactionTime"]
    second, _ = poll(api, kick_off(api, partition, f"?_since={since}"), cluster)
    second_manifest = second.get_json()
    second_ids = {(r["resourceType"], r["id"]): marker_of(r) for r in download(api, second_manifest)}
    # Then the first export holds the state at its snapshot, the second exactly the later changes
    assert len(first_ids) == 60 and ("Patient", "late") not in first_ids
    assert first_ids[("Patient", "p1")] == "before" and ("Observation", "o2") in first_ids
    assert second_ids == {("Patient", "late"): "late", ("Patient", "p1"): "changed"}
    deletions = download(api, second_manifest, "deleted")
    assert [e["request"] for d in deletions for e in d["entry"]] == [
        {"method": "DELETE", "url": "Observation/o2"}
    ]


def test_the_export_command_downloads_every_file_of_a_live_export_and_checks_the_counts(
    cluster: JobCluster,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    other_partition: str,
    tmp_path: Path,
) -> None:
    # Given a partition next to another with the same ids, and the API served over HTTP on 127.0.0.1
    expected = seed(database, partition, "mine", 40)
    seed(database, other_partition, "theirs", 40)
    app = app_for(cluster.settings, database, object_store)
    with served(app) as root:
        # When `bulkhead export` runs against the partition's base
        out = tmp_path / "out"
        result = CliRunner().invoke(
            main,
            ["export", "--base", f"{root}/partitions/{partition}", "--out", str(out)],
            catch_exceptions=False,
        )
    # Then it exits 0 and the files it wrote hold the partition's resources, once each, and nothing else
    assert result.exit_code == 0, result.output
    assert "80 resources" in result.output
    lines = [orjson.loads(x) for f in sorted(out.rglob("*.ndjson")) for x in f.read_bytes().splitlines()]
    assert Counter((r["resourceType"], r["id"]) for r in lines) == Counter(expected)
    assert {marker_of(r) for r in lines} == {"mine"}
