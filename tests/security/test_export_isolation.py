"""Bulk export across partitions, from the attacker's side: nothing of partition A is reachable from B."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import orjson
import pytest
from flask.testing import FlaskClient

from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import bulk_api
from tests.support.fhir import base, outcome_codes, put

BASE = "http://bulkhead.test"


@pytest.fixture
def api(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FlaskClient]:
    bulk = bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch)
    bulk.client.application.extensions["test.bulk"] = bulk
    yield bulk.client


def _export(api: FlaskClient, partition: str) -> tuple[str, list[str]]:
    resp = api.get(f"{base(partition)}/$export", headers={"Prefer": "respond-async"})
    location = resp.headers["Content-Location"][len(BASE) :]
    manifest = api.application.extensions["test.bulk"].finish(BASE + location).get_json()
    return location, [item["url"][len(BASE) :] for item in manifest["output"]]


def test_export_of_a_partition_never_contains_the_same_ids_of_another_partition(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given Patient/123 in A (female) and in B (male)
    put(api, f"{base(partition)}/Patient/123", {"resourceType": "Patient", "id": "123", "gender": "female"})
    put(
        api,
        f"{base(other_partition)}/Patient/123",
        {"resourceType": "Patient", "id": "123", "gender": "male"},
    )
    # When B exports
    _, files = _export(api, other_partition)
    # Then B's files hold only B's Patient
    lines = [orjson.loads(x) for url in files for x in api.get(url).data.splitlines()]
    assert [(p["id"], p["gender"]) for p in lines] == [("123", "male")]


def test_status_delete_and_files_of_a_job_of_a_are_404_from_b(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given a completed export of A
    put(api, f"{base(partition)}/Patient/1", {"resourceType": "Patient", "id": "1"})
    location, files = _export(api, partition)
    job_id = location.rsplit("/", 1)[-1]
    file_name = files[0].rsplit("/", 1)[-1]
    # When B asks for its status, files, and tries to delete it, through B's base and the root
    for attacker in (other_partition, None):
        foreign = f"{base(attacker)}/_operations/export/{job_id}"
        for resp in (api.get(foreign), api.get(f"{foreign}/{file_name}"), api.delete(foreign)):
            # Then every answer is a 404 OperationOutcome that says nothing of A
            assert resp.status_code == 404
            assert outcome_codes(resp) == ["not-found"]
            assert partition.encode() not in resp.data
    # And A's job is untouched
    assert api.get(location).status_code == 200
    assert api.get(files[0]).status_code == 200


@pytest.mark.parametrize(
    "job_id",
    [secrets.token_hex(16), "0", "..", "%2e%2e", "a" * 300, "' OR '1'='1"],
)
def test_forged_or_malformed_job_ids_are_404(api: FlaskClient, partition: str, job_id: str) -> None:
    resp = api.get(f"{base(partition)}/_operations/export/{job_id}")
    assert resp.status_code == 404
    assert api.delete(f"{base(partition)}/_operations/export/{job_id}").status_code == 404


def test_a_file_url_of_a_under_bs_job_never_serves_as_data(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given completed exports in A (female) and B (male)
    put(api, f"{base(partition)}/Patient/1", {"resourceType": "Patient", "id": "1", "gender": "female"})
    put(api, f"{base(other_partition)}/Patient/1", {"resourceType": "Patient", "id": "1", "gender": "male"})
    _, files_a = _export(api, partition)
    location_b, _ = _export(api, other_partition)
    name_a = files_a[0].rsplit("/", 1)[-1]
    # When A's file name is asked for under B's job and B's base
    same_name = api.get(f"{location_b}/{name_a}")
    # Then B gets at most its own file of that name, never A's data
    assert same_name.status_code in (200, 404)
    assert b"female" not in same_name.data
    # And names outside B's manifest, or climbing out of the job, are 404
    for name in ("..%2F..%2F" + name_a, "Patient-1-99.ndjson", "..", "%2e%2e"):
        assert api.get(f"{location_b}/{name}").status_code == 404


def test_a_replayed_status_url_of_a_deleted_job_stays_404(api: FlaskClient, partition: str) -> None:
    put(api, f"{base(partition)}/Patient/1", {"resourceType": "Patient", "id": "1"})
    location, files = _export(api, partition)
    api.delete(location)
    for _ in range(3):
        assert api.get(location).status_code == 404
        assert api.get(files[0]).status_code == 404


def test_a_group_of_b_listing_ids_that_exist_only_in_a_exports_nothing_of_a(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given Patient/a1 with an Observation in A only, and a Group in B listing Patient/a1 as a member
    put(api, f"{base(partition)}/Patient/a1", {"resourceType": "Patient", "id": "a1", "gender": "female"})
    observation = {
        "resourceType": "Observation",
        "id": "oa1",
        "status": "final",
        "code": {"text": "SECRET-OF-A"},
        "subject": {"reference": "Patient/a1"},
    }
    put(api, f"{base(partition)}/Observation/oa1", observation)
    group = {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/a1"}}],
    }
    put(api, f"{base(other_partition)}/Group/g", group)
    # When B exports the Group, and B's Patient level names A's patient
    resp = api.get(f"{base(other_partition)}/Group/g/$export", headers={"Prefer": "respond-async"})
    location = resp.headers["Content-Location"][len(BASE) :]
    manifest = api.application.extensions["test.bulk"].finish(BASE + location).get_json()
    # Then nothing is exported, and naming the patient is refused
    assert manifest["output"] == []
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/a1"}}],
    }
    refused = api.post(
        f"{base(other_partition)}/Patient/$export",
        json=body,
        headers={"Prefer": "respond-async", "Content-Type": "application/fhir+json"},
    )
    assert refused.status_code == 400 and b"SECRET" not in refused.data


def test_type_filter_of_b_never_matches_as_resources(
    api: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given an Observation with the same id and code in A and B, A's marked secret
    for name, note in ((partition, "SECRET-OF-A"), (other_partition, "b")):
        obs = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": note}}
        put(api, f"{base(name)}/Observation/o", obs)
    # When B exports with a _typeFilter that A's Observation matches as well
    query = "?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal"
    resp = api.get(f"{base(other_partition)}/$export{query}", headers={"Prefer": "respond-async"})
    location = resp.headers["Content-Location"][len(BASE) :]
    manifest = api.application.extensions["test.bulk"].finish(BASE + location).get_json()
    # Then only B's Observation is exported
    lines = [
        orjson.loads(x)
        for item in manifest["output"]
        for x in api.get(item["url"][len(BASE) :]).data.splitlines()
    ]
    assert [o["code"]["text"] for o in lines] == ["b"]
