"""``$reindex`` over HTTP: a partition's own search parameter, server-wide runs, and trusted imports."""

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

BIRTH_PLACE = {
    "resourceType": "SearchParameter",
    "id": "birth-city",
    "url": "https://example.org/fhir/SearchParameter/birth-city",
    "name": "birthCity",
    "status": "active",
    "description": "The city a patient's first address names",
    "code": "birth-city",
    "base": ["Patient"],
    "type": "string",
    "expression": "Patient.address.city",
}


@pytest.fixture
def api(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with in-process job machinery."""
    return bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch, reindex_chunk_rows=3)


def patient(i: int, city: str) -> dict[str, Any]:
    """Return a patient living in ``city``."""
    return {"resourceType": "Patient", "id": f"c{i}", "address": [{"city": city}]}


def found(api: BulkApi, partition: str, query: str) -> tuple[int, list[str]]:
    """Return the status of a Patient search and the ids it found."""
    response = api.client.get(f"{base(partition)}/Patient?{query}")
    if response.status_code != 200:
        return response.status_code, []
    return 200, sorted(e["resource"]["id"] for e in response.get_json().get("entry", []))


def test_a_partitions_new_search_parameter_works_there_after_its_reindex_job_completes(
    api: BulkApi, partition: str, other_partition: str
):
    # Given patients and the SearchParameter in one partition, the same patients in another
    for p in (partition, other_partition):
        for i, city in enumerate(["Oslo", "Bergen", "Oslo", "Tromsø", "Oslo"]):
            assert api.put(f"{base(p)}/Patient/c{i}", patient(i, city)).status_code == 201
    api.put(f"{base(partition)}/SearchParameter/birth-city", BIRTH_PLACE)
    assert found(api, partition, "birth-city=Oslo")[0] == 400
    # When $reindex runs
    kick = api.post(f"{base(partition)}/$reindex", {"resourceType": "Parameters", "parameter": []})
    assert kick.status_code == 202
    location = kick.headers["Content-Location"]
    assert location.startswith(f"{PUBLIC}/partitions/{partition}/_operations/reindex/")
    done = api.finish(location)
    # Then the search works in that partition only, and the result says what was activated
    assert done.status_code == 200
    body = done.get_json()
    assert body["extension"]["searchParameters"]["activated"] == ["birth-city"]
    assert body["extension"]["planned"] == body["extension"]["reindexed"] == 6
    assert found(api, partition, "birth-city=Oslo") == (200, ["c0", "c2", "c4"])
    assert found(api, other_partition, "birth-city=Oslo")[0] == 400
    # And its job is 404 from the other partition
    assert api.client.get(api.path(location).replace(partition, other_partition, 1)).status_code == 404


def test_deleting_a_completed_reindex_says_it_was_released_and_its_parameter_stays_searchable(
    api: BulkApi, partition: str
):
    # Given a completed reindex that activated a partition's own parameter
    assert api.put(f"{base(partition)}/Patient/c0", patient(0, "Oslo")).status_code == 201
    api.put(f"{base(partition)}/SearchParameter/birth-city", BIRTH_PLACE)
    location = api.post(f"{base(partition)}/$reindex", {"resourceType": "Parameters", "parameter": []})
    done = api.finish(location.headers["Content-Location"])
    assert done.status_code == 200
    # When its status URL is deleted
    response = api.client.delete(api.path(location.headers["Content-Location"]))
    # Then the answer says the job was released (not that parameters stay unsearchable), and they still work
    assert response.status_code == 202
    text = response.get_json()["issue"][0]["diagnostics"]
    assert "released" in text and "unsearchable" not in text and "cancelled" not in text
    assert found(api, partition, "birth-city=Oslo") == (200, ["c0"])
    assert api.client.get(api.path(location.headers["Content-Location"])).status_code == 404


def test_a_server_wide_reindex_starts_one_job_per_partition(
    api: BulkApi, partition: str, other_partition: str
):
    # Given two partitions with data
    assert api.put(f"{base(partition)}/Patient/c0", patient(0, "A")).status_code == 201
    assert api.put(f"{base(other_partition)}/Patient/c0", patient(0, "B")).status_code == 201
    # When an administrator asks for a reindex everywhere
    response = api.client.post("/_reindex")
    # Then each partition has its own job, at its own base, and each completes
    assert response.status_code == 202
    jobs = {
        part["part"][0]["valueString"]: part["part"][1].get("valueUrl")
        for part in response.get_json()["parameter"]
    }
    for p in (partition, other_partition):
        assert jobs[p].startswith(f"{PUBLIC}/partitions/{p}/_operations/reindex/")
        assert api.finish(jobs[p]).status_code == 200


def test_a_trusted_import_is_searchable_once_the_reindex_it_started_completes(
    api: BulkApi, files: FileServer, partition: str
):
    # Given a trusted import of patients
    data = b"".join(orjson.dumps(patient(i, "Trondheim")) + b"\n" for i in range(4))
    url = files.put(f"/{partition}/trusted.ndjson", data)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "validation", "valueCode": "none"},
            {"name": "input", "part": [{"name": "url", "valueUrl": url}]},
        ],
    }
    done = api.finish(api.post(f"{base(partition)}/$import", body).headers["Content-Location"])
    # When its follow-up reindex has run
    indexing = done.get_json()["extension"]["indexing"]
    assert indexing["deferred"] is True
    assert api.finish(indexing["reindexStatus"]).status_code == 200
    # Then the patients are found by an official search parameter
    assert found(api, partition, "address-city=Trondheim") == (200, ["c0", "c1", "c2", "c3"])
