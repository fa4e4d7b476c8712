"""PATCH, conditional update and conditional delete entries in batch and transaction Bundles."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from flask.testing import FlaskClient

from tests.integration.test_transactions import PATIENT_URN, bundle, entry, observation, root
from tests.support.fhir import base, post, put
from tests.support.stored_state import assert_outcome, stored_state


def patient(rid: str, mrn: str, **fields: Any) -> dict[str, Any]:
    """Return a Patient with an id and an MRN identifier."""
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": "urn:mrn", "value": mrn}],
        **fields,
    }


def without_id(resource: dict[str, Any]) -> dict[str, Any]:
    """Return ``resource`` without its id."""
    return {k: v for k, v in resource.items() if k != "id"}


def binary_patch(*ops: dict[str, Any]) -> dict[str, Any]:
    """Return a Binary holding a JSON Patch document."""
    data = base64.b64encode(orjson.dumps(list(ops))).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


def fhirpath_replace(path: str, **value: Any) -> dict[str, Any]:
    """Return a FHIRPath Patch Parameters with one replace operation."""
    parts = [{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": path}]
    parts.append({"name": "value", **value})
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}


def seed(client: FlaskClient, partition: str, *patients: dict[str, Any]) -> None:
    """Store each patient under its id."""
    for p in patients:
        assert put(client, f"{base(partition)}/Patient/{p['id']}", p).status_code == 201


def current(client: FlaskClient, partition: str, rid: str) -> Any:
    """Return the current version of Patient/rid as JSON (or the response when it is not 200)."""
    resp = client.get(f"{base(partition)}/Patient/{rid}")
    return resp.get_json(force=True) if resp.status_code == 200 else resp.status_code


def test_a_transaction_patches_with_a_binary_json_patch_and_a_fhirpath_patch(
    client: FlaskClient, partition: str
) -> None:
    # Given two patients
    seed(client, partition, patient("p1", "1", active=True), patient("p2", "2", active=True))
    # When a transaction patches one with JSON Patch (in a Binary) and the other with FHIRPath Patch
    tx = bundle(
        entry("PATCH", "Patient/p1", binary_patch({"op": "replace", "path": "/active", "value": False})),
        entry("PATCH", "Patient/p2", fhirpath_replace("Patient.active", valueBoolean=False)),
    )
    resp = post(client, root(partition), tx)
    # Then both answer 200 with version 2, and both are stored
    assert resp.status_code == 200, resp.data
    statuses = [(e["response"]["status"], e["response"]["etag"]) for e in resp.get_json(force=True)["entry"]]
    assert statuses == [("200 OK", 'W/"2"'), ("200 OK", 'W/"2"')]
    assert current(client, partition, "p1")["active"] is False
    assert current(client, partition, "p2")["active"] is False


def test_a_failing_patch_entry_rolls_the_whole_transaction_back(client: FlaskClient, partition: str) -> None:
    # Given a patient
    seed(client, partition, patient("p1", "1", gender="male"))
    before = stored_state(client, partition)
    # When a transaction creates an observation, then patches with a test that fails, or into an invalid
    # resource, or an unknown id
    for bad in (
        entry("PATCH", "Patient/p1", binary_patch({"op": "test", "path": "/gender", "value": "female"})),
        entry("PATCH", "Patient/p1", fhirpath_replace("Patient.gender", valueCode="robot")),
        entry("PATCH", "Patient/nobody", binary_patch({"op": "remove", "path": "/gender"})),
    ):
        resp = post(client, root(partition), bundle(entry("POST", "Observation", observation()), bad))
        # Then 422 (or 404) names the entry, and nothing was stored
        assert_outcome(resp, {"Patient/p1": 422, "Patient/nobody": 404}[bad["request"]["url"]])
        assert "Bundle.entry[1]" in resp.get_data(as_text=True)
    assert stored_state(client, partition) == before


def test_conditional_entries_resolve_to_their_matches_and_references_follow(
    client: FlaskClient, partition: str
) -> None:
    # Given patients with MRN 1 (to update) and MRN 2 (to delete)
    seed(client, partition, patient("keep", "1"), patient("drop", "2"))
    # When a transaction conditionally updates MRN 1 (its fullUrl referred to by a new observation),
    # conditionally deletes MRN 2 and conditionally updates MRN 3 (nothing matches)
    tx = bundle(
        entry("POST", "Observation", observation(PATIENT_URN)),
        entry(
            "PUT",
            "Patient?identifier=urn:mrn|1",
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:mrn", "value": "1"}],
                "gender": "female",
            },
            full_url=PATIENT_URN,
        ),
        entry("DELETE", "Patient?identifier=urn:mrn|2"),
        entry("PUT", "Patient?identifier=urn:mrn|3", {"resourceType": "Patient", "gender": "male"}),
    )
    resp = post(client, root(partition), tx)
    # Then MRN 1 is updated in place, the observation points at it, MRN 2 is deleted, and a new patient exists
    assert resp.status_code == 200, resp.data
    obs, updated, deleted, created = resp.get_json(force=True)["entry"]
    assert updated["response"]["status"] == "200 OK"
    assert updated["resource"]["id"] == "keep"
    assert obs["resource"]["subject"]["reference"] == "Patient/keep"
    assert deleted["response"]["status"] == "204 No Content"
    assert current(client, partition, "drop") == 410
    assert created["response"]["status"] == "201 Created"
    assert current(client, partition, created["resource"]["id"])["gender"] == "male"
    assert current(client, partition, "keep")["gender"] == "female"


def test_a_transaction_deletes_before_it_resolves_conditional_updates(
    client: FlaskClient, partition: str
) -> None:
    # Given a patient with MRN 1
    seed(client, partition, patient("old", "1"))
    # When one transaction conditionally updates MRN 1 and, listed after it, conditionally deletes MRN 1
    tx = bundle(
        entry("PUT", "Patient?identifier=urn:mrn|1", {**patient("new", "1")}),
        entry("DELETE", "Patient?identifier=urn:mrn|1"),
    )
    resp = post(client, root(partition), tx)
    # Then the delete ran first (old is gone) and the update, seeing it, created Patient/new
    assert resp.status_code == 200, resp.data
    assert [e["response"]["status"] for e in resp.get_json(force=True)["entry"]] == [
        "201 Created",
        "204 No Content",
    ]
    assert current(client, partition, "old") == 410
    assert current(client, partition, "new")["identifier"][0]["value"] == "1"


def test_conditional_entries_matching_several_resources_fail_the_transaction_with_412(
    client: FlaskClient, partition: str
) -> None:
    # Given two patients with the same MRN
    seed(client, partition, patient("a", "1"), patient("b", "1"))
    before = stored_state(client, partition)
    # When transactions conditionally delete, update or patch on that MRN
    for bad in (
        entry("DELETE", "Patient?identifier=urn:mrn|1"),
        entry("PUT", "Patient?identifier=urn:mrn|1", {"resourceType": "Patient"}),
        entry(
            "PATCH",
            "Patient?identifier=urn:mrn|1",
            binary_patch({"op": "add", "path": "/active", "value": True}),
        ),
    ):
        # Then each is a 412 and nothing changes
        assert_outcome(
            post(client, root(partition), bundle(entry("POST", "Observation", observation()), bad)), 412
        )
    assert stored_state(client, partition) == before


def test_a_conditional_update_entry_and_a_plain_entry_on_the_same_resource_are_refused(
    client: FlaskClient, partition: str
) -> None:
    # Given a patient with MRN 1
    seed(client, partition, patient("p1", "1"))
    before = stored_state(client, partition)
    # When a transaction conditionally updates it and also patches it by id
    tx = bundle(
        entry("PUT", "Patient?identifier=urn:mrn|1", {"resourceType": "Patient"}),
        entry("PATCH", "Patient/p1", binary_patch({"op": "add", "path": "/active", "value": True})),
    )
    # Then it is a 400 (a transaction touches each resource once) and nothing changes
    assert_outcome(post(client, root(partition), tx), 400)
    assert stored_state(client, partition) == before


def test_a_batch_runs_patch_and_conditional_entries_each_on_its_own(
    client: FlaskClient, partition: str
) -> None:
    # Given patients p1 (MRN 1) and two with MRN 2
    seed(client, partition, patient("p1", "1"), patient("t1", "2"), patient("t2", "2"))
    # When a batch patches p1, patches an unknown id, conditionally updates MRN 2 (several) and MRN 1 (one),
    # and sends a Binary that is not a JSON Patch and a PUT with neither id nor criteria
    batch = bundle(
        entry("PATCH", "Patient/p1", fhirpath_replace("Patient.identifier[0].value", valueString="1")),
        entry("PATCH", "Patient/ghost", binary_patch({"op": "remove", "path": "/active"})),
        entry("PUT", "Patient?identifier=urn:mrn|2", {"resourceType": "Patient"}),
        entry("PUT", "Patient?identifier=urn:mrn|1", {"resourceType": "Patient", "gender": "other"}),
        entry("PATCH", "Patient/p1", {"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="}),
        entry("PUT", "Patient", {"resourceType": "Patient"}),
        kind="batch",
    )
    resp = post(client, root(partition), batch)
    # Then each entry has its own status and the good ones are stored
    assert resp.status_code == 200, resp.data
    statuses = [e["response"]["status"][:3] for e in resp.get_json(force=True)["entry"]]
    assert statuses == ["200", "404", "412", "200", "415", "400"]
    assert current(client, partition, "p1")["gender"] == "other"
    assert current(client, partition, "p1")["meta"]["versionId"] == "3"


def test_two_conditional_writes_with_the_same_criteria_in_one_transaction_are_refused(
    client: FlaskClient, partition: str
) -> None:
    # Given a partition where no patient has MRN 7
    seed(client, partition, patient("p1", "1"))
    before = stored_state(client, partition)
    # When a transaction conditionally updates MRN 7 twice (criteria in another order the second time), and
    # another conditionally creates MRN 7 twice
    twice_updated = bundle(
        entry("PUT", "Patient?identifier=urn:mrn|7&active=true", without_id(patient("x", "7", active=True))),
        entry("PUT", "Patient?active=true&identifier=urn:mrn|7", without_id(patient("y", "7", active=True))),
    )
    twice_created = bundle(
        entry("POST", "Patient", patient("x", "7"), ifNoneExist="identifier=urn:mrn|7"),
        entry("POST", "Patient", patient("y", "7"), ifNoneExist="identifier=urn:mrn|7"),
    )
    answers = [post(client, root(partition), tx) for tx in (twice_updated, twice_created)]
    # Then each is a 400 naming the other entry, and nothing was stored
    for resp in answers:
        body = assert_outcome(resp, 400)
        assert "Bundle.entry[0]" in orjson.dumps(body).decode()
    assert stored_state(client, partition) == before
