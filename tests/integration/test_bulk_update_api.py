"""``$bulk-update`` over HTTP: a FHIRPath Patch applied to every match in one partition."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import PUBLIC, BulkApi, bulk_api
from tests.support.fhir import base
from tests.support.jobinproc import deliver


@pytest.fixture
def api(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with in-process job machinery (small ranges and batches)."""
    return bulk_api(
        s3_settings.apply(settings),
        database,
        object_store,
        monkeypatch,
        bulk_edit_chunk_rows=3,
        bulk_edit_batch_size=2,
    )


def op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """Build one FHIRPath Patch operation."""
    body = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    return {"name": "operation", "part": body + [{"name": k, **v} for k, v in parts.items()]}


TAG = {
    "resourceType": "Parameters",
    "parameter": [
        op("upsert", "Patient", name={"valueString": "active"}, value={"valueBoolean": False}),
    ],
}


def seed(api: BulkApi, partition: str, n: int) -> None:
    """Store patients x0.. alternately male and female."""
    for i in range(n):
        body = {"resourceType": "Patient", "id": f"x{i}", "gender": "male" if i % 2 == 0 else "female"}
        assert api.put(f"{base(partition)}/Patient/x{i}", body).status_code == 201


def test_every_match_gets_a_new_version_and_the_others_and_other_partitions_do_not(
    api: BulkApi, partition: str, other_partition: str
):
    # Given eight patients (four female) here and the same ids elsewhere
    seed(api, partition, 8)
    seed(api, other_partition, 8)
    # When the female patients are patched
    kick = api.patch(f"{base(partition)}/Patient/$bulk-update?gender=female", TAG)
    assert kick.status_code == 202
    location = kick.headers["Content-Location"]
    assert location.startswith(f"{PUBLIC}/partitions/{partition}/_operations/bulk-update/")
    body = api.finish(location).get_json()
    # Then four are version 2 with active false, the others are still version 1, and nothing changed elsewhere
    assert body["output"] == [{"type": "Patient", "count": 4}] and body["error"] == []
    for i in range(8):
        mine = api.client.get(f"{base(partition)}/Patient/x{i}")
        theirs = api.client.get(f"{base(other_partition)}/Patient/x{i}")
        assert theirs.headers["ETag"] == 'W/"1"' and "active" not in theirs.get_json()
        if i % 2:
            assert mine.headers["ETag"] == 'W/"2"' and mine.get_json()["active"] is False
        else:
            assert mine.headers["ETag"] == 'W/"1"' and "active" not in mine.get_json()


def test_a_second_bulk_update_in_the_same_partition_is_429_while_another_partition_may_start_one(
    api: BulkApi, partition: str, other_partition: str
):
    # Given a bulk update accepted and not yet run
    assert api.patch(f"{base(partition)}/Patient/$bulk-update?gender=male", TAG).status_code == 202
    # When a second one arrives in the same partition, and one in another partition
    again = api.patch(f"{base(partition)}/$bulk-update?_type=Patient", TAG)
    elsewhere = api.patch(f"{base(other_partition)}/Patient/$bulk-update", TAG)
    # Then the first is refused with 429 and Retry-After, the other is accepted
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 0
    assert elsewhere.status_code == 202


def test_cancel_keeps_the_committed_changes_and_says_how_many(api: BulkApi, partition: str):
    # Given a bulk update whose first range ran before the cancel
    seed(api, partition, 9)
    location = api.patch(f"{base(partition)}/Patient/$bulk-update", TAG).headers["Content-Location"]
    pending = api.sender.take()
    for message in pending:
        deliver(api.resources, message)  # plans the job and releases its first processing jobs
    first = next(m for m in api.sender.take() if m.actor == "process")
    deliver(api.resources, first)
    # When it is cancelled
    cancel = api.client.delete(api.path(location))
    api.run()
    # Then the answer names what stays updated, and later polls are 404
    assert cancel.status_code == 202
    text = cancel.get_json()["issue"][0]["diagnostics"]
    assert "3 Patient updated" in text and "stay" in text
    assert api.poll(location).status_code == 404
    versions = [api.client.get(f"{base(partition)}/Patient/x{i}").headers["ETag"] for i in range(9)]
    assert versions.count('W/"2"') == 3


@pytest.mark.parametrize(
    ("body", "query"),
    [
        ({"resourceType": "Parameters", "parameter": [op("explode", "Patient")]}, ""),
        ({"resourceType": "Patient", "id": "x"}, ""),
        (TAG, "?nonsense=1"),
    ],
)
def test_a_bad_patch_or_search_is_refused_before_anything_starts(
    api: BulkApi, partition: str, body: dict[str, Any], query: str
):
    response = api.patch(f"{base(partition)}/Patient/$bulk-update{query}", body)
    assert response.status_code == 400 and response.get_json()["resourceType"] == "OperationOutcome"
    assert api.sender.sent == []
