"""``$bulk-delete`` over HTTP: search-selected deletes in one partition, with the shared async contract."""

from __future__ import annotations

import pytest

from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import PUBLIC, BulkApi, bulk_api
from tests.support.fhir import base


@pytest.fixture
def api(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with in-process job machinery."""
    return bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch, bulk_edit_chunk_rows=4)


def seed(api: BulkApi, partition: str, n: int) -> None:
    """Store patients x0.. alternately male and female, and one observation each."""
    for i in range(n):
        gender = "male" if i % 2 == 0 else "female"
        patient = {"resourceType": "Patient", "id": f"x{i}", "gender": gender}
        assert api.put(f"{base(partition)}/Patient/x{i}", patient).status_code == 201
        obs = {"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "t"}}
        assert api.put(f"{base(partition)}/Observation/o{i}", obs).status_code == 201


def test_a_bulk_delete_by_search_deletes_exactly_the_matches_of_its_partition(
    api: BulkApi, partition: str, other_partition: str
):
    # Given ten patients (five male) here and the same ten in another partition
    seed(api, partition, 10)
    seed(api, other_partition, 10)
    # When the male patients of this partition are bulk deleted
    kick = api.client.delete(f"{base(partition)}/Patient/$bulk-delete?gender=male")
    assert kick.status_code == 202
    location = kick.headers["Content-Location"]
    assert location.startswith(f"{PUBLIC}/partitions/{partition}/_operations/bulk-delete/")
    done = api.finish(location)
    # Then five were deleted (410), the rest and the other partition are untouched
    assert done.status_code == 200
    body = done.get_json()
    assert body["output"] == [{"type": "Patient", "count": 5}] and body["extension"]["mode"] == "soft"
    for i in range(10):
        expected = 410 if i % 2 == 0 else 200
        assert api.client.get(f"{base(partition)}/Patient/x{i}").status_code == expected
        assert api.client.get(f"{base(other_partition)}/Patient/x{i}").status_code == 200


def test_a_hard_bulk_delete_across_types_leaves_no_history_and_counts_each_type(api: BulkApi, partition: str):
    # Given patients and observations
    seed(api, partition, 3)
    # When every Patient and Observation is hard deleted
    kick = api.client.delete(f"{base(partition)}/$bulk-delete?_type=Patient,Observation&_hardDelete=true")
    body = api.finish(kick.headers["Content-Location"]).get_json()
    # Then per-type counts, and no version is left to read
    assert body["output"] == [{"type": "Observation", "count": 3}, {"type": "Patient", "count": 3}]
    assert api.client.get(f"{base(partition)}/Patient/x0").status_code == 404
    assert api.client.get(f"{base(partition)}/Patient/x0/_history/1").status_code == 404


def test_purge_history_keeps_the_current_version_only(api: BulkApi, partition: str):
    # Given a patient with two versions
    api.put(f"{base(partition)}/Patient/h", {"resourceType": "Patient", "id": "h", "gender": "male"})
    api.put(f"{base(partition)}/Patient/h", {"resourceType": "Patient", "id": "h", "gender": "female"})
    # When its history is purged
    kick = api.client.delete(f"{base(partition)}/Patient/$bulk-delete?_id=h&_purgeHistory=true")
    body = api.finish(kick.headers["Content-Location"]).get_json()
    # Then version 2 is current and version 1 is gone
    assert body["output"] == [{"type": "Patient", "count": 1}] and body["extension"]["versionsPurged"] == 1
    assert api.client.get(f"{base(partition)}/Patient/h").get_json()["gender"] == "female"
    assert api.client.get(f"{base(partition)}/Patient/h/_history/1").status_code == 404


@pytest.mark.parametrize(
    "query",
    ["colour=red", "gender=male&_hardDelete=maybe", "_count=10", "_type=Nothing"],
)
def test_a_bad_bulk_delete_is_refused_and_deletes_nothing(api: BulkApi, partition: str, query: str):
    # Given a patient / When a malformed bulk delete arrives
    seed(api, partition, 1)
    path = (
        f"{base(partition)}/$bulk-delete"
        if query.startswith("_type")
        else f"{base(partition)}/Patient/$bulk-delete"
    )
    response = api.client.delete(f"{path}?{query}")
    # Then 400 with an OperationOutcome, and nothing was started
    assert response.status_code == 400 and response.get_json()["resourceType"] == "OperationOutcome"
    assert api.sender.sent == []
    assert api.client.get(f"{base(partition)}/Patient/x0").status_code == 200


def test_a_second_bulk_delete_in_the_same_partition_waits_its_turn_with_429(api: BulkApi, partition: str):
    # Given a bulk delete not yet run / When another is asked for / Then 429 with Retry-After
    first = api.client.delete(f"{base(partition)}/Patient/$bulk-delete?gender=male")
    second = api.client.delete(f"{base(partition)}/Patient/$bulk-delete?gender=female")
    assert first.status_code == 202
    assert second.status_code == 429 and second.headers["Retry-After"].isdigit()
