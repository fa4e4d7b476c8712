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
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base, put
from tests.support.http_files import file_server
from tests.support.jobprocs import PUBLIC_BASE, JobCluster, wait_for

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
    return dict(response.get_json())


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
    cluster: JobCluster, database: Database, object_store: S3ObjectStore, partition: str
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
    with file_server() as files:
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
