"""``$import`` over HTTP: the asynchronous contract, results, error files and partition isolation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import PUBLIC, BulkApi, bulk_api
from tests.support.fhir import base
from tests.support.http_files import FileServer


@pytest.fixture
def api(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with in-process job machinery."""
    return bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch)


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    """Serialise resources as NDJSON."""
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def request(*urls: str, fmt: str = "application/fhir+ndjson", **extra: str) -> dict[str, Any]:
    """Return a $import Parameters body."""
    params: list[dict[str, Any]] = [{"name": "inputFormat", "valueCode": fmt}]
    params += [{"name": k, "valueCode": v} for k, v in extra.items()]
    params += [
        {"name": "input", "part": [{"name": "type", "valueCode": "Patient"}, {"name": "url", "valueUri": u}]}
        for u in urls
    ]
    return {"resourceType": "Parameters", "parameter": params}


def patients(n: int, family: str) -> list[dict[str, Any]]:
    """Return patients p0.. with a family name."""
    return [{"resourceType": "Patient", "id": f"p{i}", "name": [{"family": family}]} for i in range(n)]


def test_an_import_answers_202_with_an_absolute_location_under_its_partition_then_200_with_counts(
    api: BulkApi, files: FileServer, partition: str
):
    # Given a file of 5 patients
    url = files.put(f"/{partition}/a.ndjson", ndjson(patients(5, "A")))
    # When the import is kicked off
    kick = api.post(f"{base(partition)}/$import", request(url), Prefer="respond-async")
    # Then it is accepted, with the status URL under this partition's absolute base
    assert kick.status_code == 202, kick.get_json()
    location = kick.headers["Content-Location"]
    assert location.startswith(f"{PUBLIC}/partitions/{partition}/_operations/import/")
    # And while queued a poll answers 202 with X-Progress and Retry-After
    running = api.poll(location)
    assert (
        running.status_code == 202
        and running.headers["Retry-After"].isdigit()
        and running.headers["X-Progress"]
        and "Content-Type" not in running.headers
    )
    # And when it completes: 200 with the Microsoft/HAPI-shaped result
    done = api.finish(location)
    assert done.status_code == 200
    body = done.get_json()
    assert body["output"] == [{"type": "Patient", "count": 5, "inputUrl": url}]
    assert body["error"] == [] and body["request"] == f"{PUBLIC}/partitions/{partition}/$import"
    assert body["transactionTime"] and "Expires" in done.headers
    read = api.client.get(f"{base(partition)}/Patient/p3")
    assert read.status_code == 200 and read.get_json()["name"] == [{"family": "A"}]


def test_colliding_ids_imported_into_two_partitions_stay_apart_and_jobs_are_invisible_across_them(
    api: BulkApi, files: FileServer, partition: str, other_partition: str
):
    # Given the same ids in two files, imported into two partitions
    url_a = files.put(f"/{partition}/x.ndjson", ndjson(patients(3, "InA")))
    url_b = files.put(f"/{partition}/y.ndjson", ndjson(patients(3, "InB")))
    loc_a = api.post(f"{base(partition)}/$import", request(url_a)).headers["Content-Location"]
    loc_b = api.post(f"{base(other_partition)}/$import", request(url_b)).headers["Content-Location"]
    assert api.finish(loc_a).status_code == 200 and api.finish(loc_b).status_code == 200
    # Then each partition reads its own
    assert api.client.get(f"{base(partition)}/Patient/p1").get_json()["name"] == [{"family": "InA"}]
    assert api.client.get(f"{base(other_partition)}/Patient/p1").get_json()["name"] == [{"family": "InB"}]
    # And A's job is 404 from B and from the root: status, cancel alike
    job_id = loc_a.rsplit("/", 1)[1]
    for path in (
        f"/partitions/{other_partition}/_operations/import/{job_id}",
        f"/_operations/import/{job_id}",
    ):
        assert api.client.get(path).status_code == 404
        assert api.client.delete(path).status_code == 404
    assert api.poll(loc_a).status_code == 200


def test_bad_lines_are_reported_in_an_error_file_downloadable_only_from_the_jobs_partition(
    api: BulkApi, files: FileServer, partition: str, other_partition: str
):
    # Given a file with one broken line among valid ones
    data = ndjson(patients(2, "Ok")) + b'{"resourceType":"Patient","id":"x",\n' + ndjson(patients(1, "Ok"))
    url = files.put(f"/{partition}/bad.ndjson", data)
    # When imported
    body = api.finish(
        api.post(f"{base(partition)}/$import", request(url)).headers["Content-Location"]
    ).get_json()
    # Then the error entry points to an absolute URL that serves the OperationOutcomes as NDJSON
    [error] = body["error"]
    assert error["type"] == "OperationOutcome" and error["count"] == 1 and error["inputUrl"] == url
    download = api.client.get(api.path(error["url"]))
    assert download.status_code == 200 and download.mimetype == "application/fhir+ndjson"
    outcome = orjson.loads(download.data.splitlines()[0])
    assert "line 3" in outcome["issue"][0]["diagnostics"]
    # And the same file is 404 from another partition
    assert api.client.get(api.path(error["url"]).replace(partition, other_partition, 1)).status_code == 404


def test_cancel_answers_202_and_every_later_poll_is_404(api: BulkApi, files: FileServer, partition: str):
    # Given an import kicked off / When it is cancelled
    url = files.put(f"/{partition}/c.ndjson", ndjson(patients(2, "C")))
    location = api.post(f"{base(partition)}/$import", request(url)).headers["Content-Location"]
    cancel = api.client.delete(api.path(location))
    # Then 202 with an OperationOutcome, then 404
    assert cancel.status_code == 202 and cancel.get_json()["resourceType"] == "OperationOutcome"
    api.run()
    assert api.poll(location).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (request("https://files.example/a.ndjson", fmt="text/csv"), 400, "not supported"),
        ({"resourceType": "Parameters", "parameter": []}, 400, "inputFormat"),
        ({"resourceType": "Patient"}, 400, "Parameters"),
        (request("ftp://files.example/a.ndjson"), 400, "s3://bucket/key"),
    ],
)
def test_bad_kick_offs_are_refused_with_an_operation_outcome_and_start_nothing(
    api: BulkApi, partition: str, body: dict[str, Any], status: int, text: str
):
    response = api.post(f"{base(partition)}/$import", body)
    assert response.status_code == status
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and text in outcome["issue"][0]["diagnostics"]
    assert api.sender.sent == []


def test_a_missing_file_or_a_changed_etag_fails_the_job_with_a_clear_operation_outcome(
    api: BulkApi, files: FileServer, partition: str
):
    # Given a URL with nothing behind it, and a file with the wrong entity tag
    missing = f"{files.base_url}/{partition}/none.ndjson"
    url = files.put(f"/{partition}/e.ndjson", ndjson(patients(1, "E")))
    changed = request(url)
    changed["parameter"][-1]["part"].append({"name": "etag", "valueString": 'W/"stale"'})
    # When each is imported
    gone = api.finish(api.post(f"{base(partition)}/$import", request(missing)).headers["Content-Location"])
    stale = api.finish(api.post(f"{base(partition)}/$import", changed).headers["Content-Location"])
    # Then the jobs failed, saying which file and why
    assert gone.status_code == 400
    assert gone.get_json()["issue"][0]["diagnostics"] == "input 0 could not be read: not found"
    assert stale.status_code == 409 and "changed" in stale.get_json()["issue"][0]["diagnostics"]
    assert api.client.get(f"{base(partition)}/Patient/p0").status_code == 404
