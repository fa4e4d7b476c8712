"""Conditional update (PUT [type]?criteria) and conditional delete (DELETE [type]?criteria)."""

from __future__ import annotations

import threading

from flask import Flask
from flask.testing import FlaskClient

from tests.support.fhir import base, outcome_codes, put


def patient(rid: str | None, mrn: str, family: str = "Chalmers", **extra: object) -> dict[str, object]:
    """Return a Patient with an MRN identifier (and an id when ``rid`` is given)."""
    body: dict[str, object] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": mrn}],
        "name": [{"family": family}],
        **extra,
    }
    if rid is not None:
        body["id"] = rid
    return body


def search_ids(client: FlaskClient, partition: str, query: str) -> list[str]:
    """Return the ids a search finds."""
    bundle = client.get(f"{base(partition)}/Patient?{query}").get_json(force=True)
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []))


def test_a_conditional_update_without_a_match_creates_with_a_server_id(
    client: FlaskClient, partition: str
) -> None:
    # Given no patient with MRN-1
    # When a conditional update without a body id is sent
    resp = put(client, f"{base(partition)}/Patient?identifier=urn:test|MRN-1", patient(None, "MRN-1"))
    # Then it is created (201, Location) with an id the server chose
    assert resp.status_code == 201, resp.data
    created = resp.get_json(force=True)
    assert created["meta"]["versionId"] == "1"
    assert resp.headers["Location"].endswith(f"/Patient/{created['id']}/_history/1")
    assert search_ids(client, partition, "identifier=urn:test|MRN-1") == [created["id"]]


def test_a_conditional_update_without_a_match_and_with_a_body_id_creates_that_id(
    client: FlaskClient, partition: str
) -> None:
    # Given no patient with MRN-1
    # When a conditional update carries the id "chosen"
    resp = put(client, f"{base(partition)}/Patient?identifier=urn:test|MRN-1", patient("chosen", "MRN-1"))
    # Then Patient/chosen is created
    assert resp.status_code == 201, resp.data
    assert client.get(f"{base(partition)}/Patient/chosen").status_code == 200


def test_a_conditional_update_with_one_match_updates_it(client: FlaskClient, partition: str) -> None:
    # Given Patient/p1 with MRN-1
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    url = f"{base(partition)}/Patient?identifier=urn:test|MRN-1"
    # When conditional updates without an id and with the match's id are sent
    without_id = put(client, url, patient(None, "MRN-1", gender="female"))
    with_id = put(client, url, patient("p1", "MRN-1", gender="male"))
    # Then both update p1 (versions 2 and 3), and no other patient exists
    assert without_id.status_code == 200, without_id.data
    assert without_id.get_json(force=True)["id"] == "p1"
    assert with_id.status_code == 200
    assert with_id.headers["ETag"] == 'W/"3"'
    assert client.get(f"{base(partition)}/Patient/p1").get_json(force=True)["gender"] == "male"
    assert search_ids(client, partition, "family=Chalmers") == ["p1"]


def test_a_conditional_update_whose_body_id_differs_from_the_match_is_a_400(
    client: FlaskClient, partition: str
) -> None:
    # Given Patient/p1 with MRN-1
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    # When a conditional update matching p1 carries the id p2
    resp = put(client, f"{base(partition)}/Patient?identifier=urn:test|MRN-1", patient("p2", "MRN-1"))
    # Then it is a 400 and nothing changed
    assert resp.status_code == 400
    assert outcome_codes(resp) == ["invalid"]
    assert client.get(f"{base(partition)}/Patient/p2").status_code == 404
    assert client.get(f"{base(partition)}/Patient/p1").get_json(force=True)["meta"]["versionId"] == "1"


def test_a_conditional_update_with_several_matches_is_a_412(client: FlaskClient, partition: str) -> None:
    # Given two Chalmers patients
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    put(client, f"{base(partition)}/Patient/p2", patient("p2", "MRN-2"))
    # When a conditional update matches both
    resp = put(client, f"{base(partition)}/Patient?family=Chalmers", patient(None, "MRN-3"))
    # Then it is a 412 and nothing was written
    assert resp.status_code == 412
    assert outcome_codes(resp) == ["conflict"]
    assert search_ids(client, partition, "family=Chalmers") == ["p1", "p2"]
    assert search_ids(client, partition, "identifier=urn:test|MRN-3") == []


def test_a_conditional_update_honours_if_match(client: FlaskClient, partition: str) -> None:
    # Given Patient/p1 at version 1
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    url = f"{base(partition)}/Patient?identifier=urn:test|MRN-1"
    # When conditional updates name a stale version, the current one, and a version where nothing matches
    stale = put(client, url, patient(None, "MRN-1", active=True), **{"If-Match": 'W/"4"'})
    fresh = put(client, url, patient(None, "MRN-1", active=True), **{"If-Match": 'W/"1"'})
    nothing = put(
        client,
        f"{base(partition)}/Patient?identifier=urn:test|MRN-9",
        patient(None, "MRN-9"),
        **{"If-Match": 'W/"1"'},
    )
    # Then the stale one and the one without a match are 412, the current one applies
    assert stale.status_code == 412
    assert fresh.status_code == 200
    assert nothing.status_code == 412
    assert search_ids(client, partition, "identifier=urn:test|MRN-9") == []


def test_an_invalid_body_in_a_conditional_update_is_a_422(client: FlaskClient, partition: str) -> None:
    # Given Patient/p1 with MRN-1
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    # When a conditional update matching it sends an unknown gender code
    resp = put(
        client, f"{base(partition)}/Patient?identifier=urn:test|MRN-1", patient(None, "MRN-1", gender="x")
    )
    # Then 422 and p1 is unchanged
    assert resp.status_code == 422
    assert client.get(f"{base(partition)}/Patient/p1").get_json(force=True)["meta"]["versionId"] == "1"


def test_a_conditional_delete_deletes_the_one_match_softly(client: FlaskClient, partition: str) -> None:
    # Given Patient/p1 with MRN-1 and Patient/p2 with MRN-2
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    put(client, f"{base(partition)}/Patient/p2", patient("p2", "MRN-2"))
    # When MRN-1 is deleted conditionally
    resp = client.delete(f"{base(partition)}/Patient?identifier=urn:test|MRN-1")
    # Then 204 with the deletion version's ETag; p1 is gone (410) with its history kept, p2 stays
    assert resp.status_code == 204
    assert resp.headers["ETag"] == 'W/"2"'
    assert client.get(f"{base(partition)}/Patient/p1").status_code == 410
    assert client.get(f"{base(partition)}/Patient/p1/_history/1").status_code == 200
    assert client.get(f"{base(partition)}/Patient/p2").status_code == 200


def test_a_conditional_delete_without_a_match_is_a_204_and_deletes_nothing(
    client: FlaskClient, partition: str
) -> None:
    # Given Patient/p1 with MRN-1
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    # When a conditional delete matches nothing, with and without Prefer: return=OperationOutcome
    quiet = client.delete(f"{base(partition)}/Patient?identifier=urn:test|MRN-9")
    told = client.delete(
        f"{base(partition)}/Patient?identifier=urn:test|MRN-9", headers={"Prefer": "return=OperationOutcome"}
    )
    # Then 204 (or 200 with an informational outcome) and p1 is still there
    assert quiet.status_code == 204
    assert told.status_code == 200
    assert outcome_codes(told) == ["informational"]
    assert client.get(f"{base(partition)}/Patient/p1").status_code == 200


def test_a_conditional_delete_with_several_matches_is_a_412_and_deletes_nothing(
    client: FlaskClient, partition: str
) -> None:
    # Given two Chalmers patients
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    put(client, f"{base(partition)}/Patient/p2", patient("p2", "MRN-2"))
    # When a conditional delete matches both, or names no criteria at all
    several = client.delete(f"{base(partition)}/Patient?family=Chalmers")
    everything = client.delete(f"{base(partition)}/Patient")
    # Then 412 and 400, and both patients remain
    assert several.status_code == 412
    assert outcome_codes(several) == ["conflict"]
    assert everything.status_code == 400
    assert search_ids(client, partition, "family=Chalmers") == ["p1", "p2"]


def test_a_conditional_delete_honours_if_match(client: FlaskClient, partition: str) -> None:
    # Given Patient/p1 at version 1
    put(client, f"{base(partition)}/Patient/p1", patient("p1", "MRN-1"))
    url = f"{base(partition)}/Patient?identifier=urn:test|MRN-1"
    # When a conditional delete names a stale version, then the current one
    stale = client.delete(url, headers={"If-Match": 'W/"3"'})
    fresh = client.delete(url, headers={"If-Match": 'W/"1"'})
    # Then 412, then 204
    assert stale.status_code == 412
    assert fresh.status_code == 204


def test_conditional_writes_at_the_root_base_use_the_default_partition(
    client: FlaskClient, partition: str
) -> None:
    # Given a unique MRN stored in a named partition only
    mrn = f"ROOT-{partition}"
    put(client, f"{base(partition)}/Patient/p1", patient("p1", mrn))
    # When the root base conditionally updates on that MRN, then deletes it
    created = put(client, f"/Patient?identifier=urn:test|{mrn}", patient(None, mrn))
    deleted = client.delete(f"/Patient?identifier=urn:test|{mrn}")
    # Then the root created its own resource and deleted it, and the named partition's p1 is untouched
    assert created.status_code == 201
    assert created.get_json(force=True)["id"] != "p1"
    assert deleted.status_code == 204
    assert client.get(f"{base(partition)}/Patient/p1").get_json(force=True)["meta"]["versionId"] == "1"


def test_concurrent_conditional_updates_with_the_same_criteria_create_one_resource(
    app: Flask, partition: str
) -> None:
    # Given six clients sending the same conditional update at once, with nothing matching yet
    statuses: list[int] = []
    barrier = threading.Barrier(6)
    url = f"{base(partition)}/Patient?identifier=urn:test|RACE"

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(put(client, url, patient(None, "RACE")).status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one created the patient and the others updated it
    assert sorted(statuses) == [200] * 5 + [201]
    assert len(search_ids(app.test_client(), partition, "identifier=urn:test|RACE")) == 1


def test_the_capability_statement_lists_patch_and_conditional_writes(
    client: FlaskClient, partition: str
) -> None:
    # Given a partition's base, When its CapabilityStatement is read
    statement = client.get(f"{base(partition)}/metadata").get_json(force=True)
    # Then every type lists patch, conditional update and single-match conditional delete
    for resource in statement["rest"][0]["resource"]:
        assert {"code": "patch"} in resource["interaction"]
        assert resource["conditionalUpdate"] is True
        assert resource["conditionalDelete"] == "single"
