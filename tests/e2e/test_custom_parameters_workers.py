"""A partition's own SearchParameters with real orchestrator and worker processes.

The API runs in the test process (Flask test client), which registers the partitions' parameters with the
search registry as soon as it is built; ``bulkhead worker`` processes load only the worker modules. These
tests check that what a worker writes (a reindex range, an import batch) is indexed with the partition's
own parameters too.
"""

from __future__ import annotations

from typing import Any

import orjson

from api import create_app
from harness.cluster import PUBLIC_BASE, JobCluster, wait_for
from storage import Database
from storage.jobs import JobQueue
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base, put
from tests.support.http_files import FileServer

FIRSTNAME = {
    "resourceType": "SearchParameter",
    "id": "patient-firstname",
    "url": "https://example.org/fhir/SearchParameter/patient-firstname",
    "name": "firstname",
    "status": "active",
    "description": "A patient's given names",
    "code": "firstname",
    "base": ["Patient"],
    "type": "string",
    "expression": "Patient.name.given",
}


def client_for(cluster: JobCluster, database: Database, store: S3ObjectStore) -> Any:
    """Return a test client of an application that sends its jobs to the cluster's queues."""
    app = create_app(cluster.settings, database=database)
    app.extensions["bulkhead.objectstore"] = store
    return app.test_client()


def run_job(client: Any, cluster: JobCluster, path: str, body: Any = None) -> dict[str, Any]:
    """Kick off a bulk operation with POST, poll it to the end and return its 200 result."""
    return run_job_with_id(client, cluster, path, body)[0]


def run_job_with_id(
    client: Any, cluster: JobCluster, path: str, body: Any = None
) -> tuple[dict[str, Any], str]:
    """Kick off a bulk operation with POST, poll it to the end; return its 200 result and its job id."""
    headers = {"Content-Type": "application/fhir+json", "Prefer": "respond-async"}
    kicked = client.post(path, json=body, headers=headers) if body else client.post(path, headers=headers)
    assert kicked.status_code == 202, kicked.get_json()
    status = str(kicked.headers["Content-Location"])[len(PUBLIC_BASE) :]

    def done() -> Any:
        response = client.get(status)
        return response if response.status_code != 202 else None

    try:
        response = wait_for(done, timeout=120, interval=0.3, what=status)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    assert response.status_code == 200, f"{response.get_json()}\n{cluster.logs()}"
    return dict(response.get_json()), status.rstrip("/").rsplit("/", 1)[-1]


def firstname_total(client: Any, partition: str, value: str) -> int:
    """Return how many Patients of the partition the custom parameter finds."""
    response = client.get(f"{base(partition)}/Patient?firstname={value}&_total=accurate")
    assert response.status_code == 200, response.get_json()
    return int(response.get_json()["total"])


def test_a_reindex_run_by_worker_processes_indexes_the_partitions_custom_parameter(
    cluster: JobCluster, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given patients stored before a custom SearchParameter on their given names, and a running fleet
    cluster.orchestrator()
    cluster.worker()
    client = client_for(cluster, database, object_store)
    for i in range(5):
        body = {"resourceType": "Patient", "id": f"g{i}", "name": [{"given": [f"Given{i % 2}"]}]}
        assert put(client, f"{base(partition)}/Patient/g{i}", body).status_code == 201
    assert put(client, f"{base(partition)}/SearchParameter/patient-firstname", FIRSTNAME).status_code == 201
    # When the partition is reindexed by the worker processes
    result = run_job(client, cluster, f"{base(partition)}/$reindex")
    # Then the parameter is active and finds the patients stored before it
    assert result["extension"]["searchParameters"]["activated"] == ["firstname"]
    assert firstname_total(client, partition, "Given0") == 3
    assert firstname_total(client, partition, "Given1") == 2


def test_an_import_run_by_worker_processes_indexes_the_partitions_active_custom_parameter(
    cluster: JobCluster, database: Database, object_store: S3ObjectStore, files: FileServer, partition: str
):
    # Given a partition whose custom parameter is active, and an NDJSON file of patients served over HTTP
    cluster.orchestrator()
    cluster.worker()
    client = client_for(cluster, database, object_store)
    assert put(client, f"{base(partition)}/SearchParameter/patient-firstname", FIRSTNAME).status_code == 201
    run_job(client, cluster, f"{base(partition)}/$reindex")
    lines = b"".join(
        orjson.dumps({"resourceType": "Patient", "id": f"i{i}", "name": [{"given": ["Imported"]}]}) + b"\n"
        for i in range(4)
    )
    url = files.put(f"/{partition}/patients.ndjson", lines)
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "input", "part": [{"name": "url", "valueUrl": url}]},
        ],
    }
    # When the file is imported by the worker processes
    result = run_job(client, cluster, f"{base(partition)}/$import", params)
    # Then every imported patient is found through the custom parameter
    assert result["extension"]["totals"]["created"] == 4
    assert firstname_total(client, partition, "Imported") == 4


def test_a_reindex_of_costly_parameters_by_worker_processes_keeps_its_heartbeat_and_counts_its_skips(
    cluster: JobCluster, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given a catastrophic-for-backtracking regex parameter and an accepted but cubic one, and Patients
    # whose names make the first backtrack forever and the second run past its budget
    cluster.orchestrator()
    cluster.worker()
    client = client_for(cluster, database, object_store)
    chars = "%context.name.first().family.toChars()"
    cubic = (
        f"Patient.name.first().family.toChars().select({chars}.select({chars}"
        ".where($this.matches('^[a-z]+$')))).count()"
    )
    for code, ptype, expression in (
        ("aaa", "string", "Patient.name.family.where($this.matches('^(a+)+$'))"),
        ("cubic", "number", cubic),
    ):
        sp = {**FIRSTNAME, "id": code, "url": f"https://example.org/sp/{code}", "code": code, "type": ptype}
        stored = put(client, f"{base(partition)}/SearchParameter/{code}", {**sp, "expression": expression})
        assert stored.status_code == 201
    for i in range(21):
        family = "aaaa" if i == 20 else "a" * 40 + "!" if i % 2 else "Vanderbergholt-Smithers"
        body = {"resourceType": "Patient", "id": f"h{i}", "name": [{"family": family}]}
        assert put(client, f"{base(partition)}/Patient/h{i}", body).status_code == 201
    # When the partition is reindexed by the worker processes (heartbeat 0.3 s, taken over after 3 s silent)
    result, job_id = run_job_with_id(client, cluster, f"{base(partition)}/$reindex")
    # Then it completes, the costly parameter's skips counted, every part done on its first attempt: the
    # heartbeat kept running through the evaluation, and the sweeper never took a part over
    extension = result["extension"]
    assert sorted(extension["searchParameters"]["activated"]) == ["aaa", "cubic"]
    assert extension["skipped"] == {"cubic": 20}
    parts = JobQueue(database).parts(partition, job_id)
    assert parts and all(p.attempts == 1 for p in parts), [(p.id, p.attempts) for p in parts]
    # And each parameter indexed what it matches: the one name of a's only, and the short name's count
    response = client.get(f"{base(partition)}/Patient?aaa:exact=aaaa&_total=accurate")
    assert response.get_json()["total"] == 1
    response = client.get(f"{base(partition)}/Patient?cubic=64&_total=accurate")
    assert response.get_json()["total"] == 1
