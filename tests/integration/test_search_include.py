"""_include, _revinclude (with :iterate) and system-level search."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.support.fhir import base, put


def seed_care(client: FlaskClient, partition: str) -> None:
    """Store an organization, a practitioner, two patients, encounters, observations and a provenance."""
    b = base(partition)
    resources: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "org", "name": "Acme"},
        {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]},
        {
            "resourceType": "Patient",
            "id": "pa",
            "name": [{"family": "Alpha"}],
            "managingOrganization": {"reference": "Organization/org"},
            "generalPractitioner": [{"reference": "Practitioner/dr"}],
        },
        {"resourceType": "Patient", "id": "pb", "name": [{"family": "Beta"}]},
        {
            "resourceType": "Encounter",
            "id": "ea",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/pa"},
            "participant": [{"individual": {"reference": "Practitioner/dr"}}],
        },
        *[
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "Patient/pa" if i < 3 else "Patient/pb"},
                "encounter": {"reference": "Encounter/ea"},
            }
            for i in range(4)
        ],
        {
            "resourceType": "Observation",
            "id": "dangling",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/nobody"},
        },
        {
            "resourceType": "Provenance",
            "id": "prov",
            "target": [{"reference": "Patient/pa"}],
            "recorded": "2024-01-01T00:00:00Z",
            "agent": [{"who": {"reference": "Practitioner/dr"}}],
        },
    ]
    for resource in resources:
        response = put(client, f"{b}/{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code == 201, response.get_json(force=True)


def entries(client: FlaskClient, partition: str, query: str) -> dict[str, list[str]]:
    """Return Type/id of the entries of a search by search mode."""
    response = client.get(f"{base(partition)}/{query}")
    assert response.status_code == 200, response.get_json(force=True)
    out: dict[str, list[str]] = {}
    for entry in response.get_json(force=True).get("entry", []):
        if "fullUrl" in entry:
            rtype, rid = entry["fullUrl"].rsplit("/", 2)[-2:]
            assert entry["resource"]["id"] == rid
            out.setdefault(entry["search"]["mode"], []).append(f"{rtype}/{rid}")
    return out


def test_include_adds_each_referenced_resource_once(client: FlaskClient, partition: str) -> None:
    # Given observations of patient pa and pb
    seed_care(client, partition)
    # When observations are searched with their subjects included
    found = entries(client, partition, "Observation?code=8867-4&_include=Observation:subject")
    # Then both patients are included once each, as include entries
    assert sorted(found["match"]) == [f"Observation/o{i}" for i in range(4)]
    assert sorted(found["include"]) == ["Patient/pa", "Patient/pb"]


def test_include_with_a_target_type_and_a_dangling_reference(client: FlaskClient, partition: str) -> None:
    seed_care(client, partition)
    found = entries(client, partition, "Observation?_id=o0,dangling&_include=Observation:subject:Patient")
    assert found["include"] == ["Patient/pa"]
    none = entries(client, partition, "Observation?_id=o0&_include=Observation:subject:Group")
    assert "include" not in none


def test_include_star_and_type_star_follow_every_reference(client: FlaskClient, partition: str) -> None:
    seed_care(client, partition)
    star = entries(client, partition, "Patient?_id=pa&_include=*")
    assert sorted(star["include"]) == ["Organization/org", "Practitioner/dr"]
    typed = entries(client, partition, "Encounter?_id=ea&_include=Encounter:*")
    assert sorted(typed["include"]) == ["Patient/pa", "Practitioner/dr"]


def test_revinclude_adds_resources_that_point_at_the_matches(client: FlaskClient, partition: str) -> None:
    seed_care(client, partition)
    found = entries(
        client, partition, "Patient?_id=pa&_revinclude=Observation:subject&_revinclude=Provenance:target"
    )
    assert found["match"] == ["Patient/pa"]
    assert sorted(found["include"]) == [
        "Observation/o0",
        "Observation/o1",
        "Observation/o2",
        "Provenance/prov",
    ]


def test_iterate_follows_includes_of_included_resources(client: FlaskClient, partition: str) -> None:
    seed_care(client, partition)
    once = entries(
        client, partition, "Observation?_id=o0&_include=Observation:subject&_include=Patient:organization"
    )
    assert once["include"] == ["Patient/pa"]
    iterated = entries(
        client,
        partition,
        "Observation?_id=o0&_include=Observation:subject&_include:iterate=Patient:organization",
    )
    assert sorted(iterated["include"]) == ["Organization/org", "Patient/pa"]


def test_matches_are_never_repeated_as_includes(client: FlaskClient, partition: str) -> None:
    seed_care(client, partition)
    found = entries(
        client,
        partition,
        "Patient?_revinclude=Patient:general-practitioner&_include=Patient:general-practitioner",
    )
    assert sorted(found["match"]) == ["Patient/pa", "Patient/pb"]
    assert found["include"] == ["Practitioner/dr"]


def test_system_search_with_type_lists_several_types(client: FlaskClient, partition: str) -> None:
    seed_care(client, partition)
    found = entries(client, partition, "?_type=Patient,Organization&_count=50")
    assert sorted(found["match"]) == ["Organization/org", "Patient/pa", "Patient/pb"]
    by_id = entries(client, partition, "?_id=pa,org,dr")
    assert sorted(by_id["match"]) == ["Organization/org", "Patient/pa", "Practitioner/dr"]
    assert client.get(f"{base(partition)}/?_type=Nope").status_code == 400
    assert client.get(f"{base(partition)}/?_type=Patient,Organization&family=alpha").status_code == 400
