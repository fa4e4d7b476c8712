"""PATCH [base]/[type]/[id]: FHIRPath Patch and JSON Patch, validated like an update, versioned."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.fhir import FHIR, base, outcome_codes, put

JSON_PATCH = "application/json-patch+json"
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "urn:test", "value": "MRN-1"}],
    "name": [{"family": "Chalmers", "given": ["Peter"]}],
    "gender": "male",
    "active": True,
}


def patch(
    client: FlaskClient, path: str, body: Any, content_type: str = JSON_PATCH, **headers: str
) -> TestResponse:
    """PATCH ``body`` (JSON) with ``content_type``."""
    return client.patch(path, json=body, headers={"Content-Type": content_type, **headers})


def fhirpath(*operations: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a FHIRPath Patch Parameters resource of the given operations' parts."""
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": op} for op in operations],
    }


def seeded(client: FlaskClient, partition: str) -> str:
    """Store PATIENT in the partition and return its URL."""
    path = f"{base(partition)}/Patient/p1"
    assert put(client, path, PATIENT).status_code == 201
    return path


def test_a_json_patch_changes_the_resource_and_stores_a_new_version(
    client: FlaskClient, partition: str
) -> None:
    # Given a stored patient
    path = seeded(client, partition)
    # When a JSON Patch tests, replaces, adds, copies, moves and removes members
    ops = [
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "James"},
        {"op": "copy", "from": "/name/0", "path": "/name/1"},
        {"op": "move", "from": "/name/1/family", "path": "/name/1/text"},
        {"op": "remove", "path": "/active"},
    ]
    resp = patch(client, path, ops)
    # Then it answers 200 with version 2, and the stored resource holds exactly those changes
    assert resp.status_code == 200, resp.data
    assert resp.headers["ETag"] == 'W/"2"'
    body = client.get(path).get_json(force=True)
    assert body["meta"]["versionId"] == "2"
    assert body["gender"] == "female"
    assert body["name"] == [
        {"family": "Chalmers", "given": ["Peter", "James"]},
        {"given": ["Peter", "James"], "text": "Chalmers"},
    ]
    assert "active" not in body
    assert client.get(f"{path}/_history/1").get_json(force=True)["gender"] == "male"


def test_a_fhirpath_patch_changes_the_resource_and_stores_a_new_version(
    client: FlaskClient, partition: str
) -> None:
    # Given a stored patient
    path = seeded(client, partition)
    # When a FHIRPath Patch replaces the gender and adds a birth date
    body = fhirpath(
        [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.gender"},
            {"name": "value", "valueCode": "other"},
        ],
        [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "birthDate"},
            {"name": "value", "valueDate": "1974-12-25"},
        ],
    )
    resp = patch(client, path, body, FHIR)
    # Then the new version carries both changes
    assert resp.status_code == 200, resp.data
    stored = client.get(path).get_json(force=True)
    assert (stored["gender"], stored["birthDate"], stored["meta"]["versionId"]) == (
        "other",
        "1974-12-25",
        "2",
    )


def test_a_patch_that_makes_the_resource_invalid_is_a_422_and_stores_nothing(
    client: FlaskClient, partition: str
) -> None:
    # Given a stored patient
    path = seeded(client, partition)
    # When patches set an unknown code, add an unknown element or a wrong type
    for ops in (
        [{"op": "replace", "path": "/gender", "value": "robot"}],
        [{"op": "add", "path": "/nickname", "value": "Pete"}],
        [{"op": "replace", "path": "/active", "value": "yes"}],
    ):
        resp = patch(client, path, ops)
        # Then each is a 422 with an OperationOutcome, and the resource is still version 1
        assert resp.status_code == 422, resp.data
        assert outcome_codes(resp)
    assert client.get(path).get_json(force=True)["meta"]["versionId"] == "1"


def test_patching_the_id_or_the_resource_type_is_refused(client: FlaskClient, partition: str) -> None:
    # Given a stored patient
    path = seeded(client, partition)
    # When JSON Patch and FHIRPath Patch try to change or remove its id and resourceType
    attempts = [
        patch(client, path, [{"op": "replace", "path": "/id", "value": "p2"}]),
        patch(client, path, [{"op": "remove", "path": "/id"}]),
        patch(client, path, [{"op": "replace", "path": "/resourceType", "value": "Group"}]),
        patch(client, path, [{"op": "move", "from": "/id", "path": "/language"}]),
        patch(
            client,
            path,
            fhirpath(
                [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.id"},
                    {"name": "value", "valueId": "p2"},
                ]
            ),
            FHIR,
        ),
    ]
    # Then each is refused (422) and nothing changed
    for resp in attempts:
        assert resp.status_code == 422, resp.data
        assert outcome_codes(resp)
    assert client.get(path).get_json(force=True)["meta"]["versionId"] == "1"
    assert client.get(f"{base(partition)}/Patient/p2").status_code == 404


def test_a_failed_json_patch_test_is_a_422_and_nothing_of_the_patch_applies(
    client: FlaskClient, partition: str
) -> None:
    # Given a stored male patient
    path = seeded(client, partition)
    # When a patch first replaces the name, then tests for a gender the patient does not have
    ops = [
        {"op": "replace", "path": "/name/0/family", "value": "Changed"},
        {"op": "test", "path": "/gender", "value": "female"},
    ]
    resp = patch(client, path, ops)
    # Then it is a 422 and the name is unchanged
    assert resp.status_code == 422
    assert outcome_codes(resp) == ["processing"]
    assert client.get(path).get_json(force=True)["name"][0]["family"] == "Chalmers"


def test_json_patch_paths_to_nothing_are_422_and_malformed_documents_are_400(
    client: FlaskClient, partition: str
) -> None:
    # Given a stored patient
    path = seeded(client, partition)
    # When paths name nothing, and documents are not JSON Patch at all
    unprocessable = [
        [{"op": "remove", "path": "/birthDate"}],
        [{"op": "replace", "path": "/name/5/family", "value": "x"}],
        [{"op": "add", "path": "/name/0/given/9", "value": "x"}],
        [{"op": "add", "path": "/contact/0/name", "value": {"family": "x"}}],
    ]
    malformed: list[Any] = [
        {"op": "remove", "path": "/active"},
        [],
        [{"op": "frobnicate", "path": "/active"}],
        [{"op": "add", "path": "/active"}],
        [{"op": "copy", "path": "/active"}],
        [{"op": "remove", "path": "active"}],
    ]
    # Then they are 422 and 400, and nothing changed
    for ops in unprocessable:
        assert patch(client, path, ops).status_code == 422, ops
    for doc in malformed:
        resp = patch(client, path, doc)
        assert resp.status_code == 400, doc
        assert outcome_codes(resp) == ["invalid"]
    bad_json = client.patch(path, data=b"[{", headers={"Content-Type": JSON_PATCH})
    assert bad_json.status_code == 400
    assert client.get(path).get_json(force=True)["meta"]["versionId"] == "1"


def test_if_match_on_a_patch_is_honoured(client: FlaskClient, partition: str) -> None:
    # Given a patient at version 1
    path = seeded(client, partition)
    ops = [{"op": "replace", "path": "/active", "value": False}]
    # When a patch names a stale version, then the current one
    stale = patch(client, path, ops, **{"If-Match": 'W/"3"'})
    fresh = patch(client, path, ops, **{"If-Match": 'W/"1"'})
    # Then the stale one is a 412 and the current one applies
    assert stale.status_code == 412
    assert outcome_codes(stale) == ["conflict"]
    assert fresh.status_code == 200
    assert fresh.get_json(force=True)["active"] is False


def test_patching_an_unknown_or_deleted_resource_is_404_or_410(client: FlaskClient, partition: str) -> None:
    # Given a deleted patient and an id never stored
    path = seeded(client, partition)
    assert client.delete(path).status_code == 204
    ops = [{"op": "replace", "path": "/active", "value": False}]
    # When both are patched, Then 404 and 410
    assert outcome_codes(patch(client, f"{base(partition)}/Patient/nobody", ops)) == ["not-found"]
    gone = patch(client, path, ops)
    assert gone.status_code == 410
    assert outcome_codes(gone) == ["deleted"]


def test_a_patch_in_another_content_type_is_a_415(client: FlaskClient, partition: str) -> None:
    # Given a stored patient
    path = seeded(client, partition)
    # When patches are sent as XML, text and without a content type
    responses = [
        client.patch(path, data=b"<diff/>", headers={"Content-Type": "application/xml-patch+xml"}),
        client.patch(path, data=b"[]", headers={"Content-Type": "text/plain"}),
        client.patch(path, data=b"[]"),
    ]
    # Then each is a 415 and nothing changed
    for resp in responses:
        assert resp.status_code == 415
        assert outcome_codes(resp) == ["not-supported"]
    assert client.get(path).get_json(force=True)["meta"]["versionId"] == "1"


def test_a_patch_keeps_the_stored_bytes_of_members_it_leaves_alone(
    client: FlaskClient, partition: str
) -> None:
    # Given an observation whose value was sent as 72.50
    path = f"{base(partition)}/Observation/o1"
    raw = (
        b'{"resourceType":"Observation","id":"o1","status":"preliminary","code":{"text":"w"},'
        b'"valueQuantity":{"value":72.50,"unit":"kg"}}'
    )
    assert client.put(path, data=raw, headers={"Content-Type": FHIR}).status_code == 201
    # When its status is patched
    resp = patch(client, path, [{"op": "replace", "path": "/status", "value": "final"}])
    # Then the value keeps its spelling
    assert resp.status_code == 200
    assert b"72.50" in client.get(path).data


def test_a_conditional_patch_changes_the_one_match_and_refuses_none_or_several(
    client: FlaskClient, partition: str
) -> None:
    # Given two patients with the family Chalmers, one with MRN-1
    seeded(client, partition)
    other = {**PATIENT, "id": "p2", "identifier": [{"system": "urn:test", "value": "MRN-2"}]}
    put(client, f"{base(partition)}/Patient/p2", other)
    ops = [{"op": "replace", "path": "/active", "value": False}]
    # When patches are sent by identifier (one match), by family (two) and by an unknown identifier (none)
    one = patch(client, f"{base(partition)}/Patient?identifier=urn:test|MRN-1", ops)
    several = patch(client, f"{base(partition)}/Patient?family=Chalmers", ops)
    none = patch(client, f"{base(partition)}/Patient?identifier=urn:test|MRN-9", ops)
    empty = patch(client, f"{base(partition)}/Patient", ops)
    # Then the match is patched, several is a 412, none a 404, no criteria a 400
    assert one.status_code == 200, one.data
    assert one.get_json(force=True)["id"] == "p1"
    assert several.status_code == 412
    assert none.status_code == 404
    assert empty.status_code == 400
    assert client.get(f"{base(partition)}/Patient/p2").get_json(force=True)["active"] is True


def test_concurrent_patches_of_one_resource_each_apply_to_the_latest_version(
    app: Flask, partition: str
) -> None:
    # Given a stored patient and five clients each adding a different given name at once
    path = seeded(app.test_client(), partition)
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def send(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(
            patch(client, path, [{"op": "add", "path": "/name/0/given/-", "value": f"G{n}"}]).status_code
        )

    threads = [threading.Thread(target=send, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every patch applied (none lost an update) and the resource is at version 6
    assert statuses == [200] * 5
    stored = app.test_client().get(path).get_json(force=True)
    assert sorted(stored["name"][0]["given"]) == ["G0", "G1", "G2", "G3", "G4", "Peter"]
    assert stored["meta"]["versionId"] == "6"
