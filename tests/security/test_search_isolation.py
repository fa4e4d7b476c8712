"""Search from the attacker's side: partition B never sees, includes, counts or changes A's resources.

Both partitions hold the same ids and the same data; in A every resource was updated once more (version
2), so any resource of A that leaked into an answer given in B would show ``versionId`` 2. A also holds
resources that exist only there ("secret" ids), and B holds references to them.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.fhir import base, post, put

PUBLIC = "http://bulkhead.test"
SHARED: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org", "name": "Shared Org"},
    {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:mrn", "value": "111"}],
        "name": [{"family": "Twin", "given": ["Ann"]}],
        "gender": "female",
        "birthDate": "1990-05-05",
        "managingOrganization": {"reference": "Organization/org"},
    },
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-02-02T10:00:00Z",
        "valueQuantity": {"value": 60, "system": "http://unitsofmeasure.org", "code": "/min", "unit": "/min"},
    },
    {"resourceType": "ValueSet", "id": "vs", "url": "http://example.org/vs/shared", "status": "active"},
    {
        "resourceType": "RiskAssessment",
        "id": "r1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.5}],
    },
    {
        "resourceType": "Provenance",
        "id": "pv",
        "target": [{"reference": "Patient/p1"}],
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Organization/org"}}],
    },
]
SECRETS: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "secret-a",
        "identifier": [{"system": "urn:mrn", "value": "SECRET-A"}],
        "name": [{"family": "Secretia"}],
        "gender": "male",
        "birthDate": "1950-01-01",
    },
    {
        "resourceType": "Observation",
        "id": "obs-secret",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "SECRET-CODE"}]},
        "subject": {"reference": "Patient/secret-a"},
        "valueQuantity": {"value": 999, "unit": "x"},
    },
]


def store(client: FlaskClient, partition: str, resource: dict[str, Any]) -> None:
    response = put(client, f"{base(partition)}/{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in {200, 201}, response.get_json(force=True)


def seed_arena(client: FlaskClient, victim: str, attacker: str) -> tuple[str, str]:
    """Store the same resources in A and B (A's updated once more), A's secrets and B's probes."""
    for resource in SHARED:
        store(client, victim, resource)
        store(client, attacker, resource)
        store(client, victim, resource)  # version 2 in A only
    for resource in SECRETS:
        store(client, victim, resource)
    a_base = f"{PUBLIC}{base(victim)}"
    probes = [
        {
            "resourceType": "Observation",
            "id": "probe-rel",
            "status": "final",
            "code": {"text": "probe"},
            "subject": {"reference": "Patient/secret-a"},
        },
        {
            "resourceType": "Observation",
            "id": "probe-abs",
            "status": "final",
            "code": {"text": "probe"},
            "subject": {"reference": f"{a_base}/Patient/p1"},
        },
    ]
    for resource in probes:
        store(client, attacker, resource)
    return victim, attacker


@pytest.fixture(scope="module")
def arena(app: Flask) -> tuple[str, str]:
    """Return (A, B), random partitions seeded once for the read-only attacks of this module."""
    return seed_arena(app.test_client(), f"a-{secrets.token_hex(6)}", f"b-{secrets.token_hex(6)}")


@pytest.fixture
def fresh_arena(client: FlaskClient, partition: str, other_partition: str) -> tuple[str, str]:
    """Return (A, B) of this test only, for attacks that write."""
    return seed_arena(client, partition, other_partition)


def answer(client: FlaskClient, partition: str, query: str, **headers: str) -> tuple[int, dict[str, Any]]:
    response = client.get(f"{base(partition)}/{query}", headers=headers)
    assert response.status_code < 500, (query, response.get_json(force=True))
    body: dict[str, Any] = response.get_json(force=True)
    return response.status_code, body


def assert_only_own(bundle: dict[str, Any], partition: str) -> list[str]:
    """Check every entry is the partition's own (URL and version); return Type/id of the entries."""
    own = f"{PUBLIC}{base(partition)}/"
    found = []
    for entry in bundle.get("entry", []):
        if entry["search"]["mode"] == "outcome":
            continue
        assert entry["fullUrl"].startswith(own), entry["fullUrl"]
        assert entry["resource"]["meta"]["versionId"] == "1", entry["resource"]
        assert "secret" not in entry["resource"]["id"]
        found.append(entry["fullUrl"].removeprefix(own))
    assert len(found) == len(set(found))
    return found


SEARCHES = [
    "Patient?name=twin",
    "Patient?family:exact=Twin",
    "Patient?name:contains=wi",
    "Patient?name:missing=false",
    "Patient?identifier=urn:mrn|111",
    "Patient?identifier=111",
    "Patient?gender:not=male",
    "Patient?birthdate=1990-05-05",
    "Patient?birthdate=ge1900&birthdate=le2100",
    "Patient?_id=p1",
    "Patient?_id:not=nobody",
    "Patient?_lastUpdated=gt2000-01-01",
    "Patient?organization=Organization/org",
    "Patient?organization:Organization=org",
    "Patient?organization.name=shared",
    "Patient?_has:Observation:subject:code=8867-4",
    "Observation?code=http://loinc.org|8867-4",
    "Observation?code:text=heart",
    "Observation?value-quantity=60",
    "Observation?value-quantity=gt10|http://unitsofmeasure.org|/min",
    "Observation?date=2024-02-02",
    "Observation?subject=Patient/p1",
    "Observation?subject:Patient.name=twin",
    "RiskAssessment?probability=0.5",
    "ValueSet?url=http://example.org/vs/shared",
    "ValueSet?url:below=http://example.org/",
    "Observation?_include=Observation:subject",
    "Observation?_include=*&_include:iterate=Patient:organization",
    "Patient?_revinclude=Observation:subject&_revinclude=Provenance:target",
    "Patient?_sort=-birthdate,name&_count=1",
    "?_type=Patient,Observation,Organization",
]


@pytest.mark.parametrize("query", SEARCHES)
def test_every_parameter_type_modifier_and_include_in_b_answers_only_with_bs_resources(
    client: FlaskClient, arena: tuple[str, str], query: str
) -> None:
    victim, attacker = arena
    # When B runs the search on its own base
    status, bundle = answer(client, attacker, query)
    # Then it succeeds with B's resources only
    assert status == 200
    found = assert_only_own(bundle, attacker)
    assert found, query
    # And its total counts B's matches only (A's identical rows would raise it above what is returned)
    if "_count" not in query:
        matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
        assert bundle["total"] == len(matches)
    assert victim != attacker


@pytest.mark.parametrize(
    "query",
    [
        "Patient?_id=secret-a",
        "Patient?identifier=urn:mrn|SECRET-A",
        "Patient?family=secretia",
        "Patient?birthdate=1950-01-01",
        "Observation?code=SECRET-CODE",
        "Observation?value-quantity=999",
        "Observation?subject:Patient.family=secretia",
        "Observation?subject.identifier=SECRET-A",
        "Patient?_has:Observation:subject:code=SECRET-CODE",
        "?_id=secret-a,obs-secret",
        "Observation?_id=obs-secret&_include=Observation:subject",
    ],
)
def test_resources_that_exist_only_in_a_are_invisible_from_b(
    client: FlaskClient, arena: tuple[str, str], query: str
) -> None:
    victim, attacker = arena
    status, bundle = answer(client, attacker, query)
    assert status == 200 and bundle["total"] == 0 and not bundle.get("entry")
    # (A itself finds them: the queries are right)
    assert answer(client, victim, query)[1]["total"] >= 1


def test_references_to_ids_that_exist_only_in_a_are_never_resolved_from_b(
    client: FlaskClient, arena: tuple[str, str]
) -> None:
    _, attacker = arena
    # B's probe points at Patient/secret-a, which only A holds: B finds its probe, never A's patient
    _, bundle = answer(client, attacker, "Observation?subject=Patient/secret-a&_include=Observation:subject")
    assert assert_only_own(bundle, attacker) == ["Observation/probe-rel"]
    _, chained = answer(client, attacker, "Observation?subject:Patient.gender=male")
    assert assert_only_own(chained, attacker) == []
    _, reverse = answer(client, attacker, "Patient?_revinclude=Observation:subject&_id=p1")
    assert "Observation/obs-secret" not in assert_only_own(reverse, attacker)


def test_absolute_urls_of_as_base_are_foreign_urls_in_b(client: FlaskClient, arena: tuple[str, str]) -> None:
    victim, attacker = arena
    a_url = f"{PUBLIC}{base(victim)}/Patient/p1"
    # B searched with A's URL finds B's resource that stored that exact URL, not B's links to Patient/p1
    _, bundle = answer(client, attacker, f"Observation?subject={a_url}&_include=Observation:subject")
    assert assert_only_own(bundle, attacker) == ["Observation/probe-abs"]
    # And following that absolute reference never includes A's patient
    _, included = answer(client, attacker, "Observation?_id=probe-abs&_include=Observation:subject")
    assert assert_only_own(included, attacker) == ["Observation/probe-abs"]


INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE resource; --",
    "x%' OR 1=1 --",
    "%",
    "_",
    "\\",
    "secret-a' UNION SELECT raw FROM resource --",
    "1) OR (1=1",
    "Patient/secret-a' OR partition_id <> 0 --",
    "$this.where(true)",
    "%00",
    "x\x00y",
    "\u00e9' OR 1=1 --",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_strings_in_values_of_each_type_are_inert(
    client: FlaskClient, arena: tuple[str, str], value: str
) -> None:
    victim, attacker = arena
    before = answer(client, victim, "?_type=Patient,Observation&_count=100")[1]
    for name in (
        "name",
        "name:exact",
        "name:contains",
        "identifier",
        "gender:not",
        "birthdate",
        "_id",
        "organization",
        "organization.name",
        "_has:Observation:subject:code",
    ):
        response = client.get(f"{base(attacker)}/Patient", query_string={name: value})
        assert response.status_code in {200, 400}, (name, value, response.get_json(force=True))
        if response.status_code == 200:
            found = assert_only_own(response.get_json(force=True), attacker)
            assert found in ([], ["Patient/p1"]), (name, value, found)
    for name in ("value-quantity", "code", "code:text", "subject"):
        response = client.get(f"{base(attacker)}/Observation", query_string={name: value})
        assert response.status_code in {200, 400}
        if response.status_code == 200:
            assert_only_own(response.get_json(force=True), attacker)
    after = answer(client, victim, "?_type=Patient,Observation&_count=100")[1]
    assert after["entry"] == before["entry"] and after["total"] == before["total"]


def test_conditional_create_in_b_with_as_identifier_creates_in_b_and_leaves_a_alone(
    client: FlaskClient, fresh_arena: tuple[str, str]
) -> None:
    victim, attacker = fresh_arena
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "SECRET-A"}]}
    created = post(
        client, f"{base(attacker)}/Patient", body, **{"If-None-Exist": "identifier=urn:mrn|SECRET-A"}
    )
    # B has no such patient, so it is created in B (it would be 200 with A's patient if A leaked)
    assert created.status_code == 201
    assert created.headers["Location"].startswith(f"{PUBLIC}{base(attacker)}/Patient/")
    # The identical-id patient p1 matches in B: B's own version 1, never A's version 2
    again = post(client, f"{base(attacker)}/Patient", body, **{"If-None-Exist": "_id=p1"})
    assert again.status_code == 200 and again.get_json(force=True)["meta"]["versionId"] == "1"
    assert answer(client, victim, "Patient?identifier=urn:mrn|SECRET-A")[1]["total"] == 1


def test_a_cursor_taken_from_a_pages_only_through_b(client: FlaskClient, arena: tuple[str, str]) -> None:
    victim, attacker = arena
    _, first = answer(client, victim, "Observation?_count=1&_sort=_id")
    cursor = next(item["url"] for item in first["link"] if item["relation"] == "next").split("_cursor=")[1]
    _, bundle = answer(client, attacker, f"Observation?_count=10&_sort=_id&_cursor={cursor}")
    assert all("secret" not in rid for rid in assert_only_own(bundle, attacker))


def test_totals_in_b_count_only_bs_resources(client: FlaskClient, arena: tuple[str, str]) -> None:
    victim, attacker = arena
    b_total = answer(client, attacker, "Patient?_summary=count")[1]["total"]
    a_total = answer(client, victim, "Patient?_summary=count")[1]["total"]
    assert (b_total, a_total) == (1, 2)


def test_a_partition_nobody_created_finds_nothing_of_a(
    client: FlaskClient, arena: tuple[str, str], partition: str
) -> None:
    stranger = f"{partition}-x"
    for query in ("Patient?_id=p1", "Patient?identifier=SECRET-A", "?_id=secret-a", "Observation?_include=*"):
        status, bundle = answer(client, stranger, query)
        assert status == 200 and bundle["total"] == 0
