"""Search by each parameter type, modifier and prefix, through the REST API on real PostgreSQL."""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.fhir import base, outcome_codes, put

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "r4-examples"
PUBLIC = "http://bulkhead.test"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text("utf-8"))


def seed_clinic(client: FlaskClient, partition: str) -> None:
    """Store a small clinic: three patients, observations, a risk assessment, a value set."""
    b = base(partition)
    p1 = example("Patient-example")  # Peter James Chalmers, male, 1974-12-25, identifier 12345
    p2 = {
        "resourceType": "Patient",
        "id": "p2",
        "name": [{"family": "du Marché", "given": ["Bénédicte"]}],
        "gender": "female",
        "birthDate": "1980-02-29",
        "identifier": [{"system": "urn:test", "value": "B2"}],
        "active": False,
    }
    p3 = {"resourceType": "Patient", "id": "p3", "gender": "other", "birthDate": "2001"}
    o1 = example("Observation-example")  # body weight 185 [lb_av], subject Patient/example, 2016-03-28
    o2 = {
        "resourceType": "Observation",
        "id": "o2",
        "status": "preliminary",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/p2"},
        "effectivePeriod": {"start": "2020-01-01T10:00:00Z", "end": "2020-01-01T11:00:00Z"},
        "valueQuantity": {
            "value": 72.5,
            "unit": "beats/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    o3 = {
        "resourceType": "Observation",
        "id": "o3",
        "status": "final",
        "code": {"text": "Free text finding"},
        "subject": {"reference": f"{PUBLIC}{b}/Patient/p3"},
        "valueString": "nothing special",
    }
    risk = copy.deepcopy(example("RiskAssessment-cardiac"))  # probability 0.02
    risk["id"] = "r1"
    risk["subject"] = {"reference": "Patient/example"}
    vs = {
        "resourceType": "ValueSet",
        "id": "colors",
        "url": "http://example.org/fhir/ValueSet/colors",
        "status": "active",
    }
    for resource in (p1, p2, p3, o1, o2, o3, risk, vs):
        response = put(client, f"{b}/{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code == 201, response.get_json(force=True)


def ids(client: FlaskClient, partition: str, query: str, **headers: str) -> set[str]:
    """Return Type/id of the matches of a search (asserting it succeeded)."""
    response = client.get(f"{base(partition)}/{query}", headers=headers)
    assert response.status_code == 200, response.get_json(force=True)
    bundle = response.get_json(force=True)
    assert bundle["type"] == "searchset"
    return {
        e["fullUrl"].rsplit("/", 2)[-2] + "/" + e["fullUrl"].rsplit("/", 1)[-1]
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    }


@pytest.fixture(scope="module")
def clinic(app: Flask) -> str:
    """Return a random partition holding the clinic, seeded once: the searches below only read it."""
    partition = f"t-{secrets.token_hex(6)}"
    seed_clinic(app.test_client(), partition)
    return partition


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?name=pet", {"Patient/example"}),
        ("Patient?name=PETER", {"Patient/example"}),
        ("Patient?family=du%20marche", {"Patient/p2"}),
        ("Patient?given=benedicte", {"Patient/p2"}),
        ("Patient?name=peter,benedicte", {"Patient/example", "Patient/p2"}),
        ("Patient?name=peter&name=windsor", {"Patient/example"}),
        ("Patient?name=peter&name=benedicte", set()),
        ("Patient?family:exact=Chalmers", {"Patient/example"}),
        ("Patient?family:exact=chalmers", set()),
        ("Patient?family:exact=du%20March%C3%A9", {"Patient/p2"}),
        ("Patient?name:contains=alm", {"Patient/example"}),
        ("Patient?name:contains=arch", {"Patient/p2"}),
        ("Patient?address-city=pleasant", {"Patient/example"}),
        ("Patient?name:missing=true", {"Patient/p3"}),
        ("Patient?name:missing=false", {"Patient/example", "Patient/p2"}),
    ],
)
def test_string_search_is_prefix_case_and_accent_insensitive_with_exact_contains_and_missing(
    client: FlaskClient, clinic: str, query: str, expected: set[str]
) -> None:
    # Given the clinic, When a string search runs, Then exactly the expected patients match
    assert ids(client, clinic, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?gender=male", {"Patient/example"}),
        ("Patient?gender=male,female", {"Patient/example", "Patient/p2"}),
        ("Patient?gender:not=male", {"Patient/p2", "Patient/p3"}),
        ("Patient?identifier=12345", {"Patient/example"}),
        ("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", {"Patient/example"}),
        ("Patient?identifier=urn:test|12345", set()),
        ("Patient?identifier=urn:test|", {"Patient/p2"}),
        ("Patient?identifier=|B2", set()),
        ("Patient?active=false", {"Patient/p2"}),
        ("Patient?identifier:missing=true", {"Patient/p3"}),
        ("Observation?code=http://loinc.org|29463-7", {"Observation/example"}),
        ("Observation?code=http://snomed.info/sct|29463-7", set()),
        ("Observation?code=8867-4", {"Observation/o2"}),
        ("Observation?code:text=heart", {"Observation/o2"}),
        ("Observation?code:text=free%20text", {"Observation/o3"}),
        ("Observation?status:not=final", {"Observation/o2"}),
        ("Observation?_id=o2,o3", {"Observation/o2", "Observation/o3"}),
        ("Observation?_id:not=o2", {"Observation/example", "Observation/o3"}),
    ],
)
def test_token_search_matches_system_and_code_forms_and_modifiers(
    client: FlaskClient, clinic: str, query: str, expected: set[str]
) -> None:
    assert ids(client, clinic, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?birthdate=1974-12-25", {"Patient/example"}),
        ("Patient?birthdate=1974", {"Patient/example"}),
        ("Patient?birthdate=eq1974-12", {"Patient/example"}),
        ("Patient?birthdate=ne1974-12-25", {"Patient/p2", "Patient/p3"}),
        ("Patient?birthdate=gt1980-02-29", {"Patient/p3"}),
        ("Patient?birthdate=ge1980-02-29", {"Patient/p2", "Patient/p3"}),
        ("Patient?birthdate=lt1980", {"Patient/example"}),
        ("Patient?birthdate=le1980-02-29", {"Patient/example", "Patient/p2"}),
        ("Patient?birthdate=sa1980-02-29", {"Patient/p3"}),
        ("Patient?birthdate=eb1980-01-01", {"Patient/example"}),
        ("Patient?birthdate=2001-06-01", set()),
        ("Patient?birthdate=ge2001-06-01", {"Patient/p3"}),
        ("Patient?birthdate=ap2001-01-01", {"Patient/p3"}),
        ("Observation?date=2020-01-01", {"Observation/o2"}),
        ("Observation?date=2020-01-01T10:30:00Z", set()),
        ("Observation?date=ge2020-01-01T10:30:00Z", {"Observation/o2"}),
        ("Observation?date=lt2020-01-01T10:30:00Z", {"Observation/example", "Observation/o2"}),
        ("Observation?date:missing=true", {"Observation/o3"}),
        ("Patient?_lastUpdated=gt2000-01-01", {"Patient/example", "Patient/p2", "Patient/p3"}),
        ("Patient?_lastUpdated=lt2000-01-01", set()),
    ],
)
def test_date_search_compares_precision_ranges_with_every_prefix(
    client: FlaskClient, clinic: str, query: str, expected: set[str]
) -> None:
    assert ids(client, clinic, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient?birthdate=9999-12-31", {"Patient/last"}),
        ("Patient?birthdate=9999", {"Patient/last", "Patient/y9999"}),
        ("Patient?birthdate=ap9999-12-31", {"Patient/last", "Patient/y9999"}),
        ("Patient?birthdate=gt9999-12-31T23:59:59Z", set()),
        ("Patient?birthdate=ge9999-12-31", {"Patient/last", "Patient/y9999"}),
        ("Patient?birthdate=sa9998", {"Patient/last", "Patient/y9999"}),
        ("Patient?birthdate=9999-12-31T23:00:00-05:00", set()),
        ("Patient?birthdate=0001-01-01", {"Patient/first"}),
        ("Patient?birthdate=ap0001-01-01", {"Patient/first"}),
        ("Patient?birthdate=lt0001-01-02", {"Patient/first"}),
        ("Patient?birthdate=le0001-01-01T00:00:00%2B05:00", set()),
        ("Patient?birthdate=eb0002", {"Patient/first"}),
        ("Patient?birthdate=ne0001-01-01", {"Patient/last", "Patient/y9999"}),
        ("Patient?_lastUpdated=gt9999-12-31T23:59:59Z", set()),
        ("Patient?_lastUpdated=ap0001-01-01", set()),
        ("Patient?_lastUpdated=lt9999", {"Patient/first", "Patient/last", "Patient/y9999"}),
    ],
)
def test_dates_at_either_end_of_the_calendar_are_ranges_that_search_like_any_other(
    client: FlaskClient, partition: str, query: str, expected: set[str]
) -> None:
    # Given patients born on the calendar's first day, its last day, and in its last year
    for rid, born in (("first", "0001-01-01"), ("last", "9999-12-31"), ("y9999", "9999")):
        put(
            client,
            f"{base(partition)}/Patient/{rid}",
            {"resourceType": "Patient", "id": rid, "birthDate": born},
        )
    # When they are searched by dates at the ends of the calendar, Then each prefix compares clamped ranges
    assert ids(client, partition, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Observation?value-quantity=1e999999999", set()),
        ("Observation?value-quantity=gt1e999999999", set()),
        ("Observation?value-quantity=lt1e999999999", {"Observation/example", "Observation/o2"}),
        ("Observation?value-quantity=gt-1e999999999", {"Observation/example", "Observation/o2"}),
        ("Observation?value-quantity=1e-999999999", set()),
        ("Observation?value-quantity=ap1e30", set()),
        ("RiskAssessment?probability=gt1e-999999999", {"RiskAssessment/r1"}),
        ("Observation?value-quantity=185", {"Observation/example"}),
        ("Observation?value-quantity=72.5", {"Observation/o2"}),
        ("Observation?value-quantity=72", set()),
        ("Observation?value-quantity=7e1", {"Observation/o2"}),
        ("Observation?value-quantity=gt100", {"Observation/example"}),
        ("Observation?value-quantity=le72.5", {"Observation/o2"}),
        ("Observation?value-quantity=ne185", {"Observation/o2"}),
        ("Observation?value-quantity=ap180", {"Observation/example"}),
        ("Observation?value-quantity=185|http://unitsofmeasure.org|[lb_av]", {"Observation/example"}),
        ("Observation?value-quantity=185|http://unitsofmeasure.org|kg", set()),
        ("Observation?value-quantity=185||lbs", {"Observation/example"}),
        ("Observation?value-quantity=gt0||/min", {"Observation/o2"}),
        ("Observation?value-quantity:missing=true", {"Observation/o3"}),
        ("RiskAssessment?probability=0.02", {"RiskAssessment/r1"}),
        ("RiskAssessment?probability=gt0.01", {"RiskAssessment/r1"}),
        ("RiskAssessment?probability=lt0", set()),
    ],
)
def test_number_and_quantity_search_use_prefixes_precision_and_units(
    client: FlaskClient, clinic: str, query: str, expected: set[str]
) -> None:
    assert ids(client, clinic, query) == expected


def test_reference_search_accepts_type_and_id_id_alone_type_modifier_and_this_partitions_url(
    client: FlaskClient, clinic: str
) -> None:
    own = f"{PUBLIC}{base(clinic)}"
    assert ids(client, clinic, "Observation?subject=Patient/example") == {"Observation/example"}
    assert ids(client, clinic, "Observation?subject=example") == {"Observation/example"}
    assert ids(client, clinic, "Observation?subject:Patient=p2") == {"Observation/o2"}
    assert ids(client, clinic, "Observation?subject:Group=p2") == set()
    assert ids(client, clinic, f"Observation?subject={own}/Patient/example") == {"Observation/example"}
    # An absolute reference to this partition's base is the same as a relative one
    assert ids(client, clinic, "Observation?subject=Patient/p3") == {"Observation/o3"}
    assert ids(client, clinic, "Observation?patient=p2,p3") == {"Observation/o2", "Observation/o3"}
    assert ids(client, clinic, "Observation?subject:missing=true") == set()


def test_uri_search_matches_exactly_or_below_and_above(client: FlaskClient, clinic: str) -> None:
    assert ids(client, clinic, "ValueSet?url=http://example.org/fhir/ValueSet/colors") == {"ValueSet/colors"}
    assert ids(client, clinic, "ValueSet?url=http://example.org/fhir/ValueSet") == set()
    assert ids(client, clinic, "ValueSet?url:below=http://example.org/fhir/") == {"ValueSet/colors"}
    assert ids(client, clinic, "ValueSet?url:above=http://example.org/fhir/ValueSet/colors/v2") == {
        "ValueSet/colors"
    }


def test_chained_and_reverse_chained_parameters_follow_references_in_the_partition(
    client: FlaskClient, clinic: str
) -> None:
    assert ids(client, clinic, "Observation?subject:Patient.name=peter") == {"Observation/example"}
    assert ids(client, clinic, "Observation?subject.gender=female") == {"Observation/o2"}
    assert ids(client, clinic, "Observation?patient.birthdate=lt1990") == {
        "Observation/example",
        "Observation/o2",
    }
    assert ids(client, clinic, "Patient?_has:Observation:subject:code=8867-4") == {"Patient/p2"}
    assert ids(client, clinic, "Patient?_has:Observation:subject:status=final") == {
        "Patient/example",
        "Patient/p3",
    }


def test_post_search_with_a_form_body_answers_like_get(client: FlaskClient, clinic: str) -> None:
    response = client.post(
        f"{base(clinic)}/Patient/_search?gender=male,female",
        data={"birthdate": "ge1975"},
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    bundle = response.get_json(force=True)
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"{PUBLIC}{base(clinic)}/Patient/p2"]
    assert bundle["total"] == 1


def test_updates_and_deletes_change_what_matches(client: FlaskClient, partition: str) -> None:
    # Given a patient named Alpha
    path = f"{base(partition)}/Patient/x1"
    put(client, path, {"resourceType": "Patient", "id": "x1", "name": [{"family": "Alpha"}]})
    assert ids(client, partition, "Patient?family=alpha") == {"Patient/x1"}
    # When it is renamed, Then only the new name matches (old index rows are gone)
    put(client, path, {"resourceType": "Patient", "id": "x1", "name": [{"family": "Beta"}]})
    assert ids(client, partition, "Patient?family=alpha") == set()
    assert ids(client, partition, "Patient?family=beta") == {"Patient/x1"}
    # When it is deleted, Then nothing matches, not even _id
    assert client.delete(path).status_code == 204
    assert ids(client, partition, "Patient?family=beta") == set()
    assert ids(client, partition, "Patient?_id=x1") == set()


@pytest.mark.parametrize(
    "query",
    [
        "Patient?shoe-size=42",
        "Patient?name:below=x",
        "Patient?birthdate=yesterday",
        "Patient?birthdate=gt2020-13-45",
        "Observation?value-quantity=heavy",
        "Observation?value-quantity=1|2",
        "Observation?subject=not a reference",
        "Observation?code-value-quantity=x$1",
        "Patient?_count=-1",
        "Patient?_sort=shoe-size",
        "Patient?_include=Patient",
        "Patient?_total=sometimes",
        "Patient?_summary=true",
        "Patient?_cursor=forged",
        "Patient?_has:Observation:subject",
        "Patient?_contained=true",
        "Patient?name:missing=perhaps",
        "Patient?identifier=|",
    ],
)
def test_malformed_or_unsupported_searches_are_400_operation_outcomes(
    client: FlaskClient, clinic: str, query: str
) -> None:
    response = client.get(f"{base(clinic)}/{query}")
    assert response.status_code == 400
    assert outcome_codes(response)


def test_lenient_handling_ignores_unknown_parameters_and_says_so(client: FlaskClient, clinic: str) -> None:
    response = client.get(
        f"{base(clinic)}/Patient?shoe-size=42&gender=male", headers={"Prefer": "handling=lenient"}
    )
    assert response.status_code == 200
    bundle = response.get_json(force=True)
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert [e["fullUrl"].rsplit("/", 1)[-1] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [
        "example"
    ]
    assert "shoe-size" not in bundle["link"][0]["url"] and "gender=male" in bundle["link"][0]["url"]


def test_capability_statement_lists_supported_parameters_and_says_what_is_not_supported(
    client: FlaskClient, partition: str
) -> None:
    statement = client.get(f"{base(partition)}/metadata").get_json(force=True)
    rest = statement["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    params = {p["name"]: p for p in patient["searchParam"]}
    # Supported parameters name their type and official definition
    assert params["name"]["type"] == "string"
    assert params["name"]["definition"] == "http://hl7.org/fhir/SearchParameter/Patient-name"
    assert {"_id", "_lastUpdated", "birthdate", "identifier", "organization"} <= set(params)
    assert ":exact" in params["name"]["documentation"]
    # Composite parameters are not offered, and the limitations extension names them
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert "code-value-quantity" not in {p["name"] for p in observation["searchParam"]}
    limits = next(e for e in rest["extension"] if e["url"].endswith("search-limitations"))
    values = {e["valueString"] for e in limits["extension"]}
    assert "Observation:code-value-quantity (composite)" in values
    assert "_contained" in values and any("composite" in v for v in values)
