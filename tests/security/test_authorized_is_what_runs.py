"""Scope bypasses found from outside: requests whose spelling made the authorizer judge something other than
what then ran. Each is sent as the attacker sent it, with a narrow token for its own partition."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from harness.tokens import bearer
from tests.support.arena import partition_rows
from tests.support.fhir import FHIR, base

PATIENT = {"resourceType": "Patient", "id": "p2", "name": [{"family": "Kept"}], "gender": "female"}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "x",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p2"},
}
ORGANIZATION = {"resourceType": "Organization", "id": "org", "name": "Acme"}


@pytest.fixture
def seeded(secure_client, auth_keys, owner_database_url, partition) -> Iterator[str]:
    """Seed a Patient, an Observation about it and an Organization; check after the test that neither the
    Patient nor the Observation changed."""
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    for resource in (PATIENT, OBSERVATION, ORGANIZATION):
        path = f"{base(partition)}/{resource['resourceType']}/{resource['id']}"
        assert secure_client.put(path, json=resource, headers=admin).status_code in {200, 201}
    before = [r for r in partition_rows(owner_database_url, partition) if r[0] != "Organization"]
    yield partition
    after = [r for r in partition_rows(owner_database_url, partition) if r[0] != "Organization"]
    assert after == before, "a resource outside the token's scopes changed"


def _types_in(body: Any) -> set[str]:
    """Return every resourceType inside an answer (nested Bundles included), OperationOutcomes aside."""
    found: set[str] = set()
    if isinstance(body, dict):
        rtype = body.get("resourceType")
        if isinstance(rtype, str) and rtype not in {"Bundle", "OperationOutcome"}:
            found.add(rtype)
        for value in body.values():
            found |= _types_in(value)
    elif isinstance(body, list):
        for item in body:
            found |= _types_in(item)
    return found


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_percent_encoded_type_in_a_bundle_entry_is_judged_as_the_type_it_decodes_to(
    secure_client, auth_keys, seeded, kind
):
    # Given a token that may only read Organizations
    token = auth_keys.hs256([seeded], "system/Organization.r")
    patch = base64.b64encode(b'[{"op": "replace", "path": "/gender", "value": "male"}]').decode()
    attacks = [
        {
            "request": {"method": "PUT", "url": "Obs%65rvation/x"},
            "resource": {**OBSERVATION, "status": "amended"},
        },
        {
            "request": {"method": "PATCH", "url": "Pati%65nt/p2"},
            "resource": {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": patch,
            },
        },
        {"request": {"method": "DELETE", "url": "Obs%65rvation/x"}},
        {"request": {"method": "POST", "url": "Pati%65nt"}, "resource": {"resourceType": "Patient"}},
    ]
    for entry in attacks:
        # When it sends a Bundle whose entry spells another type with a percent-encoded letter
        response = secure_client.post(
            base(seeded) + "/", json=_bundle(kind, entry), headers={**bearer(token), "Content-Type": FHIR}
        )
        # Then the entry is judged as the type it runs on: refused, and nothing is written
        assert response.status_code == 403, (entry, response.get_json())
        assert response.get_json()["resourceType"] == "OperationOutcome"


def test_revinclude_recurse_needs_read_on_the_type_it_brings_in(secure_client, auth_keys, seeded):
    # Given a token that may read and search Patients only
    token = bearer(auth_keys.hs256([seeded], "system/Patient.rs"))
    # When it asks for Observations through _revinclude:recurse (and :iterate)
    for key in ("_revinclude:recurse", "_revinclude:iterate", "_revinclude"):
        response = secure_client.get(f"{base(seeded)}/Patient?{key}=Observation:subject", headers=token)
        # Then it is refused
        assert response.status_code == 403, key
        assert "Observation" in response.get_json()["issue"][0]["diagnostics"]


def test_a_system_search_with_revinclude_needs_read_on_the_included_type(secure_client, auth_keys, seeded):
    # Given a token that may read and search Patients only
    token = bearer(auth_keys.hs256([seeded], "system/Patient.rs"))
    query = "_type=Patient&_revinclude=Observation:subject"
    # When it searches the system level, by GET and by POST _search
    by_get = secure_client.get(f"{base(seeded)}/?{query}", headers=token)
    by_post = secure_client.post(
        f"{base(seeded)}/_search",
        data=query,
        headers={**token, "Content-Type": "application/x-www-form-urlencoded"},
    )
    # Then both are refused
    assert by_get.status_code == 403
    assert by_post.status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "Patient?_format=json?_revinclude=Observation:subject",
        "Patient?_revinclude=Observation:subject#",
        "Patient?name=Kept#&_revinclude=Observation:subject",
        "Patient?_format=json&_revinclude=Observation%3Asubject",
        "Patient?_rev%69nclude=Observation:subject",
    ],
)
def test_a_batch_search_entry_never_brings_in_a_type_the_token_cannot_read(
    secure_client, auth_keys, seeded, url
):
    # Given a token that may read and search Patients only
    token = {**bearer(auth_keys.hs256([seeded], "system/Patient.rs")), "Content-Type": FHIR}
    # When a batch GET entry hides _revinclude behind a second '?', a '#' or an encoding
    response = secure_client.post(
        base(seeded) + "/", json=_bundle("batch", {"request": {"method": "GET", "url": url}}), headers=token
    )
    # Then either the whole request is refused, or the entry is; no Observation is ever returned
    assert response.status_code in {200, 400, 403}
    assert "Observation" not in _types_in(response.get_json())


def test_export_type_given_as_any_value_x_needs_read_on_that_type(secure_client, auth_keys, seeded):
    # Given a token that may read Patients only
    token = {**bearer(auth_keys.hs256([seeded], "system/Patient.rs")), "Content-Type": FHIR}
    for key in ("valueId", "valueCode", "valueString", "valueUri", "valueMarkdown"):
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "_type", "valueString": "Patient"}, {"name": "_type", key: "Observation"}],
        }
        # When it kicks off an export naming Observation as another primitive value[x]
        response = secure_client.post(
            f"{base(seeded)}/$export", json=body, headers={**token, "Prefer": "respond-async"}
        )
        # Then the export is refused
        assert response.status_code == 403, key


def test_nested_has_and_second_chain_hops_need_search_on_every_type_they_look_into(
    secure_client, auth_keys, seeded
):
    # Given a token that may search Patients and Observations, nothing else
    token = bearer(auth_keys.hs256([seeded], "system/Patient.rs system/Observation.rs"))
    probes = [
        "Patient?_has:Observation:subject:_has:Provenance:target:agent=x",
        "Observation?subject:Patient.organization.name=Acme",
        "Observation?subject.organization.name=Acme",
        "Patient?_has:Observation:subject:subject:Patient.organization.name=Acme",
    ]
    for probe in probes:
        # When it asks a yes/no question about Provenance or Organization through them
        response = secure_client.get(f"{base(seeded)}/{probe}", headers=token)
        # Then it is refused instead of answered
        assert response.status_code == 403, (probe, response.get_json())


def test_an_include_never_brings_in_a_type_outside_the_parameters_targets(
    secure_client, auth_keys, owner_database_url, partition
):
    # Given an Observation whose subject names a Medication (validation does not check reference targets)
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    medication = {"resourceType": "Medication", "id": "m1", "code": {"text": "secret drug"}}
    odd = {**OBSERVATION, "id": "odd", "subject": {"reference": "Medication/m1"}}
    for resource in (medication, odd):
        path = f"{base(partition)}/{resource['resourceType']}/{resource['id']}"
        assert secure_client.put(path, json=resource, headers=admin).status_code == 201
    # When a token that may read Observations and Patients includes the subjects
    token = bearer(auth_keys.hs256([partition], "system/Observation.rs system/Patient.r system/Group.r"))
    token_all = bearer(auth_keys.hs256([partition], "system/*.rs"))
    narrow = secure_client.get(
        f"{base(partition)}/Observation?_id=odd&_include=Observation:subject:Patient", headers=token
    )
    wide = secure_client.get(
        f"{base(partition)}/Observation?_id=odd&_include=Observation:subject", headers=token_all
    )
    # Then the narrow include brings in no Medication, and the open one only the parameter's target types
    assert narrow.status_code == 200
    assert _types_in(narrow.get_json()) == {"Observation"}
    assert wide.status_code == 200
    assert "Medication" not in _types_in(wide.get_json())


def test_a_token_whose_scope_is_a_number_is_refused_with_401(secure_client, auth_keys, partition):
    # Given a correctly signed token whose scope claim is a number
    token = auth_keys.hs256([partition], 5)
    # When it is used
    response = secure_client.get(f"{base(partition)}/Patient/x", headers=bearer(token))
    # Then it is an invalid token, not a server error
    assert response.status_code == 401
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_route_without_a_permission_rule_is_refused(secure_app):
    # Given every route of the application
    from services.parse import ADMIN_ENDPOINTS, PUBLIC_ENDPOINTS, READERS, bare_endpoint

    endpoints = {bare_endpoint(rule.endpoint) for rule in secure_app.url_map.iter_rules()}
    # When each is looked up among the readers and the system endpoints
    uncovered = sorted(endpoints - set(READERS) - ADMIN_ENDPOINTS - PUBLIC_ENDPOINTS)
    # Then none is left without a permission rule (an uncovered one would be refused, fail closed)
    assert uncovered == []
